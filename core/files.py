"""Files written whole: a reader (another process, a replica's pull) sees the old file or the new one; and
one change of a file at a time across processes (:func:`exclusive`). Folders replaced whole
(:func:`replace_folder`). JSON written for other tools is strict (:func:`finite`)."""

from __future__ import annotations

import errno
import fcntl
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_UMASK = os.umask(0o022)  # read once: the process's mask for new files
os.umask(_UMASK)


def finite(value: object) -> object:
    """``value`` with every float that is not a number (NaN, infinite) as None, in dicts, lists and tuples
    at any depth: strict JSON (``json.dumps(..., allow_nan=False)``), which other tools parse; a metric of
    no query, or a latency of no search, is null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def fsync_path(path: Path) -> None:
    """Flush ``path`` to disk: a file's data, or a folder's entries (a file renamed into it)."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_text_atomic(path: Path, text: str | bytes | None, durable: bool = False) -> None:
    """``text`` at ``path`` (a str as UTF-8; bytes as they are), by a temporary file of its own renamed into
    place, so writers at the same time never mix their texts; None: no file at ``path``. ``durable``: on disk
    before this returns (the file before it is renamed, then the folder's entry), for a file that commits
    others (a manifest naming them)."""
    if text is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8") if isinstance(text, str) else text
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            # the mode of the file it replaces, else a new file's (mkstemp's own is the owner's only)
            os.fchmod(out.fileno(), path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_UMASK)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_path(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def exclusive(path: Path, wait: bool = True) -> Iterator[bool]:
    """Hold the lock of ``path`` (:func:`holding` ``<path>.lock`` beside it): for a change that reads a file,
    decides and writes it back, so that a change made by another in between is not overwritten unseen. Each
    writer must take it; readers need not (the file is written whole, :func:`write_text_atomic`). Yields
    whether it is held (``wait`` False: only if free at once)."""
    with holding(_lock_of(path), wait=wait) as held:
        yield held


def _lock_of(path: Path) -> Path:
    """The lock beside ``path`` that :func:`exclusive` holds alone and :func:`append_line` shared."""
    return path.with_name(f"{path.name}.lock")


def append_line(path: Path, line: str) -> None:
    """Append ``line`` (and a line end) to ``path`` (made, with its folder, if missing), holding the lock of
    :func:`exclusive` shared: a rewrite of the file under :func:`exclusive` (read, filtered, replaced: ``events
    forget`` and ``prune``) loses none of it, as the append waits for it and then opens the new file. Appends
    do not wait for each other; taking the lock costs microseconds when none waits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with holding(_lock_of(path), shared=True), path.open("a") as handle:
        handle.write(line + "\n")


@contextmanager
def holding(lock_file: Path, shared: bool = False, missing_ok: bool = False, wait: bool = True) -> Iterator[bool]:
    """Hold ``fcntl.flock`` on ``lock_file`` (made, with its folder, if missing), waiting while another process
    or thread holds it (``wait`` False: held only if free at once, else nothing is held). ``shared``: a lock many
    may hold at once, that waits only for (and holds off) the one who holds it alone: readers that must not see a
    change half made, while each writer holds it alone.

    The file is opened for reading and writing: on NFS, Linux makes ``flock`` a lock of the file's bytes,
    which a process holds alone only on a file it opened for writing. A process that may not write it, nor
    its folder (a service user, where an operator's command made the file), opens it for reading only, and
    locks it all the same where ``flock`` is the kernel's own (a local disk). One that is not there and may
    not be made raises, unless ``missing_ok``: then nothing is held. Yields whether the lock is held."""
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            handle = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:  # another's file, or a folder not ours to add to (the file may be there)
            handle = os.open(lock_file, os.O_RDONLY)
        except OSError as error:  # a file system mounted read-only: reading is all it allows
            if error.errno != errno.EROFS:
                raise
            handle = os.open(lock_file, os.O_RDONLY)
    except (FileNotFoundError, PermissionError) as error:
        if not missing_ok or (isinstance(error, PermissionError) and lock_file.parent.is_dir()):
            raise  # not missing, or missing and not to be passed by
        handle = None
    if handle is None:
        yield False
        return
    try:
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:  # another holds it, and this one does not wait
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        os.close(handle)


def staging_of(path: Path) -> Path:
    """The folder (``<path>.building``) where the next whole folder for ``path`` is made, for
    :func:`replace_folder` to move in: beside the folder a link at ``path`` points at (on its disk)."""
    real = _real(path)
    return real.with_name(real.name + ".building")


def replace_folder(path: Path) -> None:
    """Move the folder made at :func:`staging_of` ``path`` in at ``path`` (at the folder a link there points
    at: the link stays); the folder there is put aside as ``<path>.old``, not deleted, until the new one is in
    its place: a process that dies between the two renames leaves both whole, and :func:`recover_folder` puts
    one of them back. Hold ``path``'s lock (:func:`exclusive`) while it is made and moved in."""
    real = _real(path)
    old = real.with_name(real.name + ".old")
    _remove(old)
    if real.exists():
        real.rename(old)
    staging_of(path).rename(real)
    _remove(old)


def recover_folder(path: Path, whole: Callable[[Path], bool]) -> Path | None:
    """Finish or undo a :func:`replace_folder` that a process dying cut short (hold ``path``'s lock): with no
    ``whole`` folder at ``path``, the new one (:func:`staging_of`) is moved in if whole, else the old one it was
    replacing (``<path>.old``); an old folder left beside a whole one is deleted. The folder moved in, if any."""
    real = _real(path)
    old = real.with_name(real.name + ".old")
    moved = None
    if not whole(real):
        for folder in (staging_of(path), old):
            if whole(folder):
                _remove(real)  # a folder that is not whole is none
                folder.rename(real)
                moved = folder
                break
    if old.exists() and whole(real):
        _remove(old)
    return moved


def _real(path: Path) -> Path:
    """``path``, or the folder a link there points at (which need not exist: a swap cut short)."""
    return path.resolve() if path.is_symlink() else path


def _remove(path: Path) -> None:
    """Delete the folder ``path`` (a link there: the link alone), if there is one."""
    if path.is_symlink():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)
