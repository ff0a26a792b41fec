"""Files written whole: a reader (another process, a replica's pull) sees the old file or the new one."""

from __future__ import annotations

from pathlib import Path


def write_text_atomic(path: Path, text: str | None) -> None:
    """``text`` at ``path`` (UTF-8), by a temporary file renamed into place; None: no file at ``path``."""
    if text is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
