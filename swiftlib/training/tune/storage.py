"""Where a study lives: opening an Optuna storage from what a user writes, and creating or
joining a study in it (refusing one that optimises something else).

Storages: a SQLite file (``study.db`` or ``sqlite:///…``) for one machine, a journal file
(``study.log`` / ``journal:PATH``) on a shared filesystem so SLURM array workers join one
study, any RDB URL, or an Optuna storage object. RDB storages that swiftlib opens record
Optuna's heartbeat (:mod:`swiftlib.training.tune.liveness`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna

from swiftlib.training.tune.errors import StorageError, TuneError
from swiftlib.training.tune.liveness import Heartbeat

__all__ = ["STUDY_ATTRS", "open_storage", "open_study", "study_direction"]

#: Study user attributes that identify what a study optimises (checked when a study is joined).
STUDY_ATTRS = ("monitor", "direction", "label", "task")
JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
JOURNAL_PREFIX = "journal:"
URL_MARK = "://"
ACCEPTED = (
    "a SQLite file (study.db), a journal file for shared filesystems (study.log, or "
    "journal:PATH), or an RDB URL (sqlite:///path/study.db, postgresql://…)"
)


def _is_journal(text: str) -> bool:
    if text.startswith(JOURNAL_PREFIX):
        return True
    return URL_MARK not in text and Path(text).suffix in JOURNAL_SUFFIXES


def _open_journal(text: str) -> tuple[Any, str]:
    path = Path(text.removeprefix(JOURNAL_PREFIX)).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab"):
            pass
        backend = optuna.storages.journal.JournalFileBackend(str(path))
        return optuna.storages.JournalStorage(backend), f"{JOURNAL_PREFIX}{path}"
    except OSError as e:
        raise StorageError(
            f"storage {text!r}: cannot open the journal file {str(path)!r} ({e}); "
            "give a writable path (on a filesystem every worker sees)"
        ) from None


def _sqlite_url(text: str) -> str:
    path = Path(text).expanduser()
    if path.suffix not in SQLITE_SUFFIXES:
        raise StorageError(f"storage {text!r}: not a recognised storage; expected {ACCEPTED}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(
            f"storage {text!r}: cannot create the folder of the SQLite file ({e})"
        ) from None
    return f"sqlite:///{path.resolve()}"


def _open_rdb(url: str, heartbeat: Heartbeat | None) -> tuple[Any, str]:
    options = heartbeat.rdb_options() if heartbeat is not None else {}
    try:
        with warnings.catch_warnings():
            # heartbeat_interval is marked experimental in Optuna (since 2.9); the warning
            # would be printed in every notebook and worker log
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, **options), url
    except ImportError as e:
        raise StorageError(f"storage {url!r}: the database driver is not installed ({e})") from None
    except Exception as e:  # sqlalchemy's errors (bad URL, unreachable server, unwritable file)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise StorageError(
            f"storage {url!r} cannot be opened: {first}; expected {ACCEPTED}"
        ) from None


def open_storage(storage, heartbeat: Heartbeat | None = None) -> tuple[Any, str]:
    """``(storage object, description)`` for a SQLite/journal file path, an RDB URL
    (``sqlite:///…``, ``postgresql://…``), ``journal:PATH`` or an Optuna storage object
    (used as it is). ``heartbeat``: an RDB storage opened here records Optuna's heartbeat
    with these settings (a journal file has none in Optuna; see
    :mod:`swiftlib.training.tune.liveness`). Raises :class:`StorageError` with what was given
    and what is accepted."""
    if isinstance(storage, optuna.storages.BaseStorage):
        return storage, type(storage).__name__
    text = str(storage)
    if _is_journal(text):
        return _open_journal(text)
    if URL_MARK not in text:
        text = _sqlite_url(text)
    return _open_rdb(text, heartbeat)


def study_direction(monitor_mode: str) -> str:
    """Optuna's direction for a Lightning monitor mode (``max`` / ``min``)."""
    return {"max": "maximize", "min": "minimize"}[monitor_mode]


def open_study(
    storage, study_name: str, expected: dict, sampler=None, pruner=None, create: bool = True
):
    """Create the study or join it; refuse one that monitors something else.

    ``expected``: the :data:`STUDY_ATTRS` this run needs (empty: accept any study)."""
    if not study_name or not isinstance(study_name, str):
        raise TuneError(f"study_name={study_name!r}: expected a non-empty name")
    names = optuna.get_all_study_names(storage)
    if study_name not in names:
        if not create:
            raise TuneError(
                f"no study {study_name!r} in this storage; studies there: {sorted(names) or 'none'}"
            )
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            direction=expected["direction"],
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
    else:
        study = optuna.load_study(
            study_name=study_name, storage=storage, sampler=sampler, pruner=pruner
        )
    if len(study.directions) != 1:
        raise TuneError(
            f"study {study_name!r} is multi-objective; swiftlib studies optimise one "
            "monitored metric"
        )
    have = {k: study.user_attrs.get(k) for k in STUDY_ATTRS}
    have["direction"] = study.direction.name.lower()
    diff = {
        k: (have[k], v) for k, v in expected.items() if have.get(k) is not None and have[k] != v
    }
    if diff:
        what = "; ".join(f"{k}: the study has {a!r}, this run {b!r}" for k, (a, b) in diff.items())
        raise TuneError(
            f"study {study_name!r} already exists with other settings ({what}); use "
            "another study_name (or storage) for a different experiment"
        )
    for k, v in expected.items():
        if study.user_attrs.get(k) is None and k != "direction":
            study.set_user_attr(k, v)
    return study
