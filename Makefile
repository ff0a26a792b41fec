# ShopRank: two commands do all set-up on a fresh machine.
#   make run    create .venv, install, start the API on 127.0.0.1:8000 (demo store if no catalog)
#   make test   create .venv, install, run the whole test suite
# Artifacts (indexes, models, caches) go to $(SHOPRANK_HOME), git-ignored.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export SHOPRANK_HOME ?= $(CURDIR)/artifacts
export HF_HUB_OFFLINE := 1
PIP_FLAGS ?= --disable-pip-version-check --progress-bar off

# Debian packages the test suite uses for real: Redis (Feast online store, score store), HAProxy (the
# local topology), iproute2 (a loopback-only network namespace for LightGBM on Dask)
APT_PACKAGES ?= redis-server haproxy iproute2
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-deps run test test-fast lint bench clean-artifacts

$(BIN)/activate:
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"ShopRank needs Python 3.11, found {sys.version.split()[0]}; set PYTHON=python3.11"'
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build
$(VENV)/.installed: $(BIN)/activate pyproject.toml requirements/constraints.txt
	$(BIN)/pip install $(PIP_FLAGS) --upgrade pip wheel
	$(BIN)/pip install $(PIP_FLAGS) torch==2.13.0
	$(BIN)/pip install $(PIP_FLAGS) -c requirements/constraints.txt -e ".[test,redis]"
	touch $@

install: $(VENV)/.installed

# CATALOG=path/to/catalog.csv serves your own catalog instead of the demo store
run: install
	$(BIN)/shoprank serve $(if $(CATALOG),--catalog $(CATALOG)) $(if $(PORT),--port $(PORT))

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get install -y -q $$missing >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q $$missing; }; \
	fi

test: install system-deps
	$(BIN)/python -m pytest -m "" --durations=15 tests

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not integration" tests

lint: install
	$(BIN)/python -m ruff check . || true

bench: install
	$(BIN)/python benchmarks/first_stage.py

clean-artifacts:
	rm -rf $(SHOPRANK_HOME)
