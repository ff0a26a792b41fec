"""What a bad environment says about itself: the messages :func:`core.settings.get_settings` raises for a
bad value (named as the environment variable or config file key that gave it) and the warnings for
``SHOPRANK_*`` variables that name no setting.

Each helper takes the settings model it speaks of, so that :mod:`core.settings` imports this module and not
the other way round.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_settings.exceptions import SettingsError

from core.errors import InvalidInput


def _holds(value: str, path: Sequence[str]) -> bool:
    """Whether the JSON ``value`` of a variable that gives a whole dict, list or section holds ``path`` (the
    rest of an error's location below it). pydantic-settings merges such a variable with the config file's
    keys of the same dict or section, so a bad key beside the ones it gives is the file's."""
    if not path:
        return True
    try:
        data: Any = json.loads(value)
    except ValueError:
        return False
    for part in path:
        if part == "[key]":  # the error is about the key just found
            return True
        if isinstance(data, dict):
            key = next((key for key in data if str(key).lower() == part.lower()), None)  # names read in any case
            if key is None:
                return False
            data = data[key]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return False
    return True


def settings_error(err: ValidationError, environ: Mapping[str, str]) -> InvalidInput:
    """One message naming every bad setting as its environment variable, the value and what is allowed.

    A setting inside a dict, list or section (``serving.stage_budgets_ms.teacher``) is named with the variable
    that gives it there, when that variable's JSON holds it; a setting no variable gives came from the
    ``SHOPRANK_CONFIG`` file.
    """
    bad = []
    config = environ.get("SHOPRANK_CONFIG")
    given = {key.upper(): value for key, value in environ.items()}  # the settings read variable names in any case
    for problem in err.errors():
        loc = [str(part) for part in problem.get("loc", ())]
        variables = ["SHOPRANK_" + "__".join(loc[:n]).upper() for n in range(len(loc), 0, -1)]
        named = [(name, len(loc) - n) for n, name in enumerate(variables) if name in given]
        holder = next((name for name, depth in named if _holds(given[name], loc[depth:])), None)
        if holder == variables[0] or (holder is None and not named and not config):
            name = variables[0]
        elif holder is not None:  # a key of the dict, list or section this variable gives
            name = f"{'.'.join(loc)} (in {holder})"
        elif config:  # not in any variable's value: the config file's key
            name = f"{'.'.join(loc)} (in SHOPRANK_CONFIG {config})"
        else:  # no config file to blame: the variable that gives the part of the settings it is in
            name = f"{'.'.join(loc)} (in {named[0][0]})"
        bad.append(f"{name}={problem.get('input')!r}: {problem['msg']}")
    return InvalidInput("bad setting(s): " + "; ".join(bad) + " (every setting with its range: `shoprank config "
                        "reference`, docs/configuration.md)")


def _json_example(model: type[BaseModel], variable: str, value: str) -> str | None:
    """What environment variable ``variable`` should say when it sets a list, a dict or a whole section of
    ``model``, which take JSON (a list: ``value``'s comma-separated parts; a dict or section: its default's
    first entry); None when it sets a single value or names no setting."""
    current: Any = model
    field = None
    for part in variable.upper().removeprefix("SHOPRANK_").lower().split("__"):
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return None
        field = current.model_fields[part]
        current = field.annotation
    if field is None:
        return None
    if get_origin(field.annotation) is list:
        return json.dumps([part.strip() for part in value.split(",") if part.strip()])
    default = field.get_default(call_default_factory=True)
    if isinstance(default, BaseModel):
        default = default.model_dump(mode="json")
    if get_origin(field.annotation) is dict or isinstance(default, dict):
        return json.dumps(dict(list(default.items())[:1]))
    return None


def not_json_error(err: SettingsError, model: type[BaseModel], environ: Mapping[str, str]) -> InvalidInput:
    """The message for a list or dict setting of ``model`` whose variable is not JSON, naming the variable and
    its value."""
    bad = []
    for key, value in sorted(environ.items()):
        example = _json_example(model, key, value) if key.upper().startswith("SHOPRANK_") else None
        if example is None:
            continue
        try:
            json.loads(value)
        except ValueError:
            bad.append(f"{key}={value!r} is not JSON: give JSON, e.g. {key}='{example}'")
    if not bad:  # pydantic-settings said more than these variables tell
        bad = [f"{err}; a setting that holds several values (a dict or a list) takes JSON, e.g. "
               "SHOPRANK_SERVING__STAGE_BUDGETS_MS='{\"teacher\": 60}'"]
    return InvalidInput("bad setting(s): " + "; ".join(bad) + " (every setting: `shoprank config reference`, "
                        "docs/configuration.md)")


# variables ShopRank reads itself, beside the settings: the config file, the CPU features hidden from detection
# (benchmarks/cpu_mask.py), the Dask workers' network namespace (core.compute), the Feast repo's tables folder
# (feature_repo/), the A/B review notebook's inputs, the pinned runs' background switch (tests/pinned_runs.py)
# and the mark of a process that `shoprank cluster up` started (shoprank/cli.py: it warns of nothing again)
OWN_VARIABLES = frozenset({
    "SHOPRANK_CONFIG", "SHOPRANK_CPU_HIDE", "SHOPRANK_LOOPBACK_NETNS", "SHOPRANK_FEATURES_DIR", "SHOPRANK_LOG_ROOT",
    "SHOPRANK_EXPERIMENT", "SHOPRANK_CONTROL", "SHOPRANK_TREATMENT", "SHOPRANK_WEIGHTS", "SHOPRANK_VERSIONS",
    "SHOPRANK_PINNED_BACKGROUND", "SHOPRANK_STARTED_BY"})


def unknown_variables(model: type[BaseModel], environ: Iterable[str]) -> list[str]:
    """A warning for each ``SHOPRANK_*`` variable that names no setting of ``model`` (a misspelled top-level
    setting is otherwise ignored without a word; one inside a section is refused), with the closest setting's
    name."""
    names = ["SHOPRANK_" + name.upper() for name in model.model_fields]
    warnings = []
    for key in sorted(environ):
        top = key.upper().split("__")[0]
        if not top.startswith("SHOPRANK_") or top in names or key.upper() in OWN_VARIABLES:
            continue
        close = difflib.get_close_matches(top, names, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        warnings.append(f"{key} names no setting and is ignored{hint} (every setting: `shoprank config reference`)")
    return warnings
