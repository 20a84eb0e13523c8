"""Run directories shared safely: a lock while a run is in it, no silent overwrite of a
finished run, reruns staged until they succeed, and clear errors for bad paths or a full disk.

- **Lock.** ``swiftlib run -o RUN_DIR`` holds an exclusive ``flock`` on ``RUN_DIR/.swiftlib.lock``
  (for rank r > 0 of an ``srun`` job: ``RUN_DIR/ranks/.rank-<r>.lock``) for the whole
  run; the file records the holder's pid, host and start time. A second run into the same
  directory fails at once with :class:`RunDirBusy` naming them. The kernel of the locked run
  does not inherit the descriptor (Python opens files non-inheritable), so the lock goes with
  the runner process: a killed run leaves no stale lock (the file stays; the lock does not).
  On a network file system the lock is as good as its ``flock`` support (NFSv4: yes; Lustre:
  mounted with ``-o flock``, as on Perlmutter's scratch).
- **Finished runs.** A run directory whose ``results.json`` says ``"ok"`` is finished: running
  into it again is refused (:class:`RunDirFinished`) unless ``overwrite``. A directory with a
  failed or missing ``results.json`` (an interrupted, crashed or requeued run) is run into in
  place, so its ``checkpoints/last.ckpt`` and ``hpc_ckpt_<n>.ckpt`` stay there to resume from.
- **Staged reruns.** An overwrite of a finished run executes into ``RUN_DIR/.rerun/`` (its own
  ``tensorboard/``, checkpoints and results.json); only when it ends ``"ok"`` are the old
  run's files replaced by the new ones (:func:`swap_in`). A failed rerun leaves the finished
  run untouched and is kept for inspection as ``RUN_DIR/rerun-failed-<time>/``.
- **Paths.** :func:`check_run_dir_path` refuses an unexpanded ``$VAR``/``~`` and, for a path
  typed on the command line, a parent folder that does not exist or cannot be written.
- **Full disk.** :func:`out_of_space` recognises ENOSPC/EDQUOT (also inside a kernel's error
  text) so the run is recorded as failed with ``out of space on <path>``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
from datetime import datetime
from pathlib import Path

__all__ = [
    "LOCK_NAME",
    "STAGING_NAME",
    "RunDirError",
    "RunDirBusy",
    "RunDirFinished",
    "RunDirLock",
    "check_run_dir_path",
    "make_run_dir",
    "is_finished",
    "prepare_staging",
    "swap_in",
    "keep_failed_rerun",
    "out_of_space",
    "out_of_space_message",
]

log = logging.getLogger(__name__)

LOCK_NAME = ".swiftlib.lock"
STAGING_NAME = ".rerun"
_UNEXPANDED = re.compile(r"\$(\{?)([A-Za-z_][A-Za-z0-9_]*)")
#: errnos of a full disk or an exhausted quota
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXT = re.compile(r"No space left on device|Disk quota exceeded|\[Errno (28|122)\]")


class RunDirError(ValueError):
    """The run directory cannot be used as given (one-line message for the command line)."""


class RunDirBusy(RunDirError):
    """Another run holds the run directory's lock."""


class RunDirFinished(RunDirError):
    """The run directory holds a finished run and ``overwrite`` was not given."""


def check_run_dir_path(run_dir, option: str = "-o", require_parent: bool = False) -> Path:
    """``run_dir`` as a :class:`Path`, refused with a one-line :class:`RunDirError` when it
    holds an unexpanded ``$VAR`` or a leading ``~`` (quoted in the shell), or — with
    ``require_parent`` (a path typed on the command line) — when its parent folder does not
    exist, is not a folder or cannot be written."""
    text = str(run_dir)
    m = _UNEXPANDED.search(text)
    if m:
        name = m[2]
        value = os.environ.get(name)
        now = f"${name} is {value!r} here" if value is not None else f"${name} is not set here"
        raise RunDirError(
            f"{option} {text!r} contains the unexpanded variable ${name} ({now}); the shell "
            f"did not expand it (single quotes?): write the path out, or quote it with double "
            f'quotes: {option} "{text}"'
        )
    if text.startswith("~"):
        raise RunDirError(
            f"{option} {text!r} starts with an unexpanded '~'; write the path out or leave "
            f"the ~ outside quotes ({option} ~/{text[2:] if text.startswith('~/') else '…'})"
        )
    path = Path(text)
    if require_parent:
        parent = path.absolute().parent
        if not parent.exists():
            raise RunDirError(
                f"{option} {text!r}: its parent folder {str(parent)!r} does not exist; create "
                f"it first (mkdir -p {parent}) or check the path for a typo"
            )
        if not parent.is_dir():
            raise RunDirError(f"{option} {text!r}: {str(parent)!r} is a file, not a folder")
        if not path.exists() and not os.access(parent, os.W_OK | os.X_OK):
            raise RunDirError(
                f"{option} {text!r}: the folder {str(parent)!r} is not writable (read-only "
                "file system or permissions); choose a run directory you can write"
            )
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{option} {text!r} is a file, not a run directory")
    return path


def make_run_dir(path: Path, option: str = "-o") -> Path:
    """``mkdir -p`` with a one-line error (read-only file system, permissions, a file in the
    way) instead of a traceback."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        why = e.strerror or type(e).__name__
        where = e.filename or path
        raise RunDirError(f"{option} {str(path)!r}: cannot create it ({why}: {where})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunDirError(f"{option} {str(path)!r} is not writable (read-only or permissions)")
    return path


class RunDirLock:
    """Exclusive, non-blocking ``flock`` on ``folder/.swiftlib.lock`` (see the module
    docstring); raises :class:`RunDirBusy` naming the holder when taken."""

    def __init__(self, folder, run_dir=None, name: str = LOCK_NAME):
        self.folder = Path(folder)
        self.run_dir = Path(run_dir) if run_dir is not None else self.folder
        self.path = self.folder / name
        self._fd: int | None = None

    def holder(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> RunDirLock:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as e:
            why = out_of_space_message(self.path, e) if out_of_space(e) else e.strerror or e
            raise RunDirError(
                f"run directory {str(self.run_dir)!r}: cannot lock it ({why})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            h = self.holder()
            who = "another process"
            if h:
                who = f"pid {h.get('pid', '?')} on host {h.get('host', '?')}"
                who += f" (since {h.get('since', '?')})"
            raise RunDirBusy(
                f"run directory {str(self.run_dir)!r} is in use by {who}; wait for that run to "
                "end or choose another -o"
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now().isoformat(timespec="seconds"),
        }
        try:  # who holds it, for the message a second run prints
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError:  # a full disk must not stop the lock; the message says "another process"
            pass
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


def is_finished(run_dir) -> bool:
    """True when ``run_dir/results.json`` exists and says ``"status": "ok"``."""
    p = Path(run_dir) / "results.json"
    try:
        return json.loads(p.read_text()).get("status") == "ok"
    except (OSError, ValueError, AttributeError):
        return False


def prepare_staging(run_dir) -> Path:
    """An empty ``run_dir/.rerun/`` (a leftover of a killed rerun is removed)."""
    staging = Path(run_dir) / STAGING_NAME
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    return staging


def _rewrite_paths(folder: Path, old: str, new: str) -> None:
    """Paths of the staging folder recorded in the small text files of a run (results.json,
    config.yaml, the executed notebook and its HTML) now name the run directory."""
    for p in folder.iterdir():
        if p.is_file() and p.suffix in (".json", ".yaml", ".ipynb", ".html"):
            text = p.read_text(encoding="utf-8", errors="surrogateescape")
            if old in text:
                from swiftlib.utils.io import atomic_write_text

                atomic_write_text(p, text.replace(old, new))


def swap_in(run_dir, staging) -> None:
    """Replace the finished run's files in ``run_dir`` by the successful rerun's in ``staging``
    (the caller holds the lock). The old files are moved aside first and removed last, so an
    interrupted swap leaves them in ``run_dir/.replaced/`` rather than lost."""
    run_dir, staging = Path(run_dir), Path(staging)
    _rewrite_paths(staging, str(staging.resolve()), str(run_dir.resolve()))
    replaced = run_dir / ".replaced"
    if replaced.exists():
        shutil.rmtree(replaced)
    replaced.mkdir()
    keep = {LOCK_NAME, STAGING_NAME, ".replaced"}
    for p in run_dir.iterdir():
        if p.name not in keep and not p.name.startswith("rerun-failed-"):
            os.replace(p, replaced / p.name)
    # results.json last: a reader sees the old run's results until the new run's files are in
    entries = sorted(staging.iterdir(), key=lambda p: p.name == "results.json")
    for p in entries:
        if p.name != LOCK_NAME:
            os.replace(p, run_dir / p.name)
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(replaced, ignore_errors=True)


def keep_failed_rerun(run_dir, staging) -> Path:
    """A failed rerun's staging folder, renamed ``rerun-failed-<time>`` for inspection."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = Path(run_dir) / f"rerun-failed-{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = Path(run_dir) / f"rerun-failed-{stamp}-{n}"
    os.replace(staging, target)
    return target


def out_of_space(error) -> bool:
    """True for an exception (or an error text from a kernel) that says the disk or the
    quota is full."""
    if isinstance(error, BaseException):
        seen = set()
        while error is not None and id(error) not in seen:
            seen.add(id(error))
            if isinstance(error, OSError) and error.errno in _NO_SPACE:
                return True
            if _NO_SPACE_TEXT.search(str(error)):
                return True
            error = error.__cause__ or error.__context__
        return False
    return bool(_NO_SPACE_TEXT.search(str(error or "")))


def out_of_space_message(path, error=None) -> str:
    """``out of space on <path> (<free> free of <total>)``: the file system of ``path``."""
    path = Path(getattr(error, "filename", None) or path)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        usage = shutil.disk_usage(probe)
        room = f" ({usage.free / 2**20:.1f} MiB free of {usage.total / 2**20:.1f} MiB)"
    except OSError:
        room = ""
    detail = f": {error}" if error is not None else ""
    return f"out of space on {path}{room}{detail}"
