"""Every setting is read somewhere, described, and listed in the generated reference."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from core.settings import Settings
from shoprank.commands.config import reference

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "retrieval", "evaluation", "ranking", "online_learning", "simulation", "serving", "api",
            "shoprank")


def leaf_fields() -> list[tuple[str, str, str | None]]:
    """(section, field, description) of every setting (section '' for top-level ones)."""
    out = []
    for name, info in Settings.model_fields.items():
        section = info.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            out += [(name, field, sub.description) for field, sub in section.model_fields.items()]
        else:
            out.append(("", name, info.description))
    return out


def code_outside_settings() -> str:
    declaring = {ROOT / "core" / "settings.py", ROOT / "core" / "service_settings.py",
                 ROOT / "shoprank" / "commands" / "config.py"}
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if p not in declaring]
    return "\n".join(p.read_text() for p in files)


def unread(code: str) -> list[str]:
    """Settings whose attribute is never read (``.name``) by the code."""
    return [f"{section}.{field}".lstrip(".") for section, field, _ in leaf_fields()
            if not re.search(rf"\.{field}\b", code)]


def test_every_setting_is_read_by_the_code() -> None:
    assert unread(code_outside_settings()) == []


def test_an_unread_setting_is_caught() -> None:
    code = code_outside_settings()
    assert unread(code.replace(".rrf_k", ".something_else")) == ["retrieval.rrf_k"]


def test_every_setting_has_a_description() -> None:
    assert [f"{s}.{f}" for s, f, description in leaf_fields() if not description] == []


def test_the_configuration_reference_is_current() -> None:
    written = (ROOT / "docs" / "configuration.md").read_text()
    assert written == reference(), "regenerate it: shoprank config reference > docs/configuration.md"
    for section, field, _ in leaf_fields():
        variable = f"SHOPRANK_{section.upper()}__{field.upper()}" if section else f"SHOPRANK_{field.upper()}"
        assert f"`{variable}`" in written
