"""Files written whole, by several writers at once, and changed by one at a time."""

from __future__ import annotations

import threading
from pathlib import Path

from core.files import exclusive, holding, write_text_atomic


def test_writers_at_the_same_time_never_mix_their_texts(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    texts = ["hide: [P1]\n", "queries:\n" + "".join(f"  q{i}: {{pin: [P{i}]}}\n" for i in range(5000))]
    write_text_atomic(path, texts[0])
    stop, read, failures = threading.Event(), [], []

    def write(text: str) -> None:
        try:
            for _ in range(60):
                write_text_atomic(path, text)
        except OSError as error:  # a writer whose temporary file another one took
            failures.append(error)

    def reader() -> None:
        while not stop.is_set():
            read.append(path.read_text())

    watching = threading.Thread(target=reader)
    watching.start()
    writers = [threading.Thread(target=write, args=(t,)) for t in texts * 2]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    watching.join()
    assert failures == [] and read and set(read) <= set(texts)  # every read is one whole text
    assert [p.name for p in tmp_path.iterdir()] == ["rules.yaml"]  # no temporary file left
    write_text_atomic(path, "café".encode("latin-1"))  # bytes are written as they are (a file put back)
    assert path.read_bytes() == b"caf\xe9"
    path.chmod(0o640)
    write_text_atomic(path, "hide: []\n")  # a rewrite keeps the file's mode
    assert path.stat().st_mode & 0o777 == 0o640
    write_text_atomic(path, None)
    assert not path.exists()
    write_text_atomic(path, "new\n")  # a new file gets the process's usual mode, not mkstemp's 0600
    assert path.stat().st_mode & 0o777 == 0o666 & ~current_umask()


def test_one_holds_a_file_s_lock_at_a_time_across_processes(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    path = tmp_path / "experiments" / "current.json"
    waiter = ("import sys, time; from pathlib import Path; from core.files import exclusive\n"
              "with exclusive(Path(sys.argv[1])): print(time.time(), flush=True)")
    with exclusive(path):
        assert (tmp_path / "experiments" / "current.json.lock").is_file() and not path.exists()
        other = subprocess.Popen([sys.executable, "-c", waiter, str(path)], stdout=subprocess.PIPE, text=True,
                                 cwd=Path(__file__).resolve().parents[2])
        time.sleep(1.0)
        assert other.poll() is None  # waiting for the lock
        released = time.time()
    out, _ = other.communicate(timeout=60)
    assert other.returncode == 0 and float(out) >= released
    with exclusive(path):  # taken again once given back
        pass


# the lock file given by argv[1] taken shared and alone, and one beside it that is not there: raises, or with
# missing_ok is passed
LOCKING = """
import sys
from pathlib import Path
from core.files import holding
try:
    open(sys.argv[1], "a")
    print("writable")
except PermissionError:
    pass
with holding(Path(sys.argv[1]), shared=True):
    pass
with holding(Path(sys.argv[1])):
    print("locked")
missing = Path(sys.argv[1]).with_name("other.lock")
try:
    with holding(missing):
        pass
except FileNotFoundError:
    print("missing")
with holding(missing, missing_ok=True) as held:
    print("held" if held else "passed")
"""


def test_a_lock_file_this_user_may_not_write_is_locked_all_the_same(tmp_path: Path) -> None:
    """A lock file (and its folder) made by another user, as ``events forget`` run by an operator leaves the
    erasure list's: the service's consumer opened it to write, and every batch failed. ``flock`` needs no
    more than a descriptor open for reading. One that is not there, in such a folder, cannot be made."""
    from tests.helpers import as_another_user

    folder = tmp_path / "privacy"
    folder.mkdir()
    lock = folder / "forgotten.jsonl.lock"
    with holding(lock):  # made here, as its owner would
        pass
    lock.chmod(0o444)  # read-only: as another owner's file is to this user
    folder.chmod(0o555)
    try:
        run = as_another_user(LOCKING, str(lock))
    finally:
        folder.chmod(0o755)
    assert run.returncode == 0 and run.stdout.split() == ["locked", "missing", "passed"], run.stderr


def test_a_lock_file_this_user_may_write_is_opened_for_writing(tmp_path: Path) -> None:
    """On NFS, Linux makes ``flock`` a lock of the file's bytes, which a process holds alone only on a file it
    opened for writing: a lock file opened for reading only could not be held alone there."""
    import os

    lock = tmp_path / "forgotten.jsonl.lock"

    def modes() -> list[int]:  # the access modes of this process's descriptors open on ``lock``
        found = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}") == str(lock):
                    flags = Path(f"/proc/self/fdinfo/{fd}").read_text().split("flags:")[1].split()[0]
                    found.append(int(flags, 8) & os.O_ACCMODE)
            except OSError:  # closed meanwhile (the listing's own descriptor)
                continue
        return found

    for shared in (False, True):
        with holding(lock, shared=shared):
            assert modes() == [os.O_RDWR]
    assert modes() == []


def current_umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
