"""The documentation holds: the README's examples run as printed, links resolve, the README stays short.

- The README's curl and Python examples run against a real ``shoprank serve`` of
  the demo store (as ``make run`` starts it) and print what the README shows:
  exactly where the output is deterministic, the same shape where it is not
  (request ids, timings).
- Every relative link in README.md, docs/*.md and benchmarks/RESULTS.md points at
  an existing file, and every ``#anchor`` at a heading of the target.
- README.md is a front door: at most 200 lines, written for users.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from online_learning.local_broker import free_port
from tests.helpers import share_cache, start_serve, wait_ready

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "RESULTS.md"]
README_ADDRESS = "127.0.0.1:8000"  # where `make run` serves; rewritten to the test server's port

FENCE = re.compile(r"^[ \t]*```([\w-]*)[ \t]*\n(.*?)^[ \t]*```[ \t]*$", re.MULTILINE | re.DOTALL)


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def example_and_output(language: str, marker: str) -> tuple[str, str]:
    """The first README block of ``language`` containing ``marker``, and the block after it (its output)."""
    blocks = code_blocks(README.read_text())
    for i, (lang, body) in enumerate(blocks):
        if lang == language and marker in body:
            assert i + 1 < len(blocks), f"the README's {language} example has no output block after it"
            return body, blocks[i + 1][1]
    raise AssertionError(f"README.md has no {language} block containing {marker!r}")


# -- (a) the README's examples against a served demo store -------------------------------------

def _client_env() -> dict[str, str]:
    env = dict(os.environ)
    env["NO_PROXY"] = env["no_proxy"] = ",".join(filter(None, [env.get("NO_PROXY"), "127.0.0.1", "localhost"]))
    return env


@pytest.fixture(scope="module")
def served_demo(tmp_path_factory: pytest.TempPathFactory, settings: Settings, real_encoder) -> Iterator[int]:  # type: ignore[no-untyped-def]
    """`shoprank serve` with embedded defaults on a fresh home (the demo store), as `make run` starts it;
    the home's cache is the session's, so the ONNX export of the bi-encoder is reused. Yields the port."""
    port = free_port()
    home = share_cache(tmp_path_factory.mktemp("docs_home"), settings)
    env = {k: v for k, v in _client_env().items() if not k.startswith("SHOPRANK_")}
    process = start_serve(home, port, {"HF_HUB_OFFLINE": "1"}, base_env=env)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


VARYING = {"request_id", "took_ms", "stages_ms"}  # differ per call: compared by shape


def assert_same(shown: object, actual: object, path: str = "$") -> None:
    """``actual`` matches what the README shows: equal, floats to the digits shown, VARYING keys by shape."""
    if isinstance(shown, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        assert list(actual) == list(shown), f"{path}: keys {list(actual)} != shown {list(shown)}"
        for key, value in shown.items():
            where = f"{path}.{key}"
            if key == "request_id":
                assert isinstance(actual[key], str) and re.fullmatch(r"[0-9a-f]{32}", actual[key]), where
            elif key == "took_ms":
                assert isinstance(actual[key], (int, float)) and actual[key] >= 0, where
            elif key == "stages_ms":
                assert sorted(actual[key]) == sorted(value), f"{where}: stages {sorted(actual[key])}"
                assert all(isinstance(v, (int, float)) and v >= 0 for v in actual[key].values()), where
            else:
                assert_same(value, actual[key], where)
    elif isinstance(shown, list):
        assert isinstance(actual, list) and len(actual) == len(shown), f"{path}: {actual!r}"
        for i, (a, b) in enumerate(zip(shown, actual)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(shown, float):
        assert isinstance(actual, (int, float)), f"{path}: {actual!r}"
        assert math.isclose(actual, shown, rel_tol=1e-3, abs_tol=1e-4), f"{path}: {actual} != shown {shown}"
    else:
        assert actual == shown, f"{path}: {actual!r} != shown {shown!r}"


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_example_prints_what_the_readme_shows(served_demo: int) -> None:
    command, output = example_and_output("bash", f"curl -s {README_ADDRESS}/v1/search")
    assert README_ADDRESS in command
    run = subprocess.run(["bash", "-c", command.replace(README_ADDRESS, f"127.0.0.1:{served_demo}")],
                         check=False, env=_client_env(), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    shown = json.loads(output)  # the README shows valid JSON (wrapped)
    assert_same(shown, json.loads(run.stdout))


@pytest.mark.integration
def test_readme_python_example_prints_what_the_readme_shows(served_demo: int) -> None:
    code, output = example_and_output("python", f"http://{README_ADDRESS}")
    run = subprocess.run([sys.executable, "-c", code.replace(README_ADDRESS, f"127.0.0.1:{served_demo}")],
                         check=False, env=_client_env(), capture_output=True, text=True, timeout=60,
                         cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout == output


# -- (b) links ---------------------------------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code (their brackets are not links)."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of the headings of a Markdown file."""
    found: set[str] = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def relative_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(prose(path.read_text()))
            if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]  # http:, https:, mailto:, ...


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_existing_files(doc: Path) -> None:
    assert doc.is_file(), f"{doc} is missing"
    broken = []
    for target in relative_links(doc):
        file_part, _, anchor = target.partition("#")
        resolved = (doc.parent / file_part).resolve() if file_part else doc
        if not resolved.exists():
            broken.append(f"{target}: no file {resolved}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)


def test_the_docs_link_to_each_other() -> None:
    readme = set(relative_links(README))
    for target in ("docs/operations.md", "docs/learning_loop.md", "docs/models.md", "docs/architecture.md",
                   "docs/configuration.md", "benchmarks/RESULTS.md"):
        assert target in readme, f"README.md does not link to {target}"


# -- (c) the README is a short front door for users --------------------------------------------

def test_readme_is_short() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; keep it <= 200 and move detail to docs/"


@pytest.mark.parametrize("words", ["issue", "issues", "the guide", "bar"])
def test_readme_speaks_to_users(words: str) -> None:
    text = README.read_text()
    hits = [f"line {n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1)
            if re.search(rf"\b{re.escape(words)}\b", line, re.IGNORECASE)]
    assert not hits, f"README.md says {words!r}:\n" + "\n".join(hits)
