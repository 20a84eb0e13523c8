"""fit's resume precedence (requeue checkpoint > resume_from > last.ckpt after a SLURM restart >
a new run) and a training cell's log: no Lightning banners, one swiftlib line."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from swiftlib.training import fit
from swiftlib.training.fit import _resume_path, quiet_lightning
from tests.conftest import tiny_fit_config

SLURM = {"SLURM_JOB_ID": "77", "SLURM_JOB_NAME": "swiftlib-finetune"}


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    for var in ("SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"last")
    return tmp_path


def _cfg(resume_from=None):
    return SimpleNamespace(resume_from=resume_from)


def test_outside_slurm_resume_from_alone_decides(run_dir):
    (run_dir / "hpc_ckpt_1.ckpt").write_bytes(b"hpc")  # ignored outside a SLURM job
    assert _resume_path(_cfg(), run_dir) is None
    assert _resume_path(_cfg("/x/last.ckpt"), run_dir) == "/x/last.ckpt"


def test_in_slurm_a_requeue_checkpoint_wins_over_resume_from(run_dir, monkeypatch):
    for k, v in SLURM.items():
        monkeypatch.setenv(k, v)
    given = str(run_dir / "checkpoints" / "last.ckpt")
    # no requeue checkpoint: resume_from (the templates pass last.ckpt on a rerun)
    assert _resume_path(_cfg(given), run_dir) == given
    # a new job, not restarted, nothing given: a new run
    assert _resume_path(_cfg(), run_dir) is None
    (run_dir / "hpc_ckpt_1.ckpt").write_bytes(b"hpc")
    (run_dir / "hpc_ckpt_2.ckpt").write_bytes(b"hpc")
    # None = Lightning loads the newest hpc_ckpt_<n>.ckpt itself
    assert _resume_path(_cfg(given), run_dir) is None
    assert _resume_path(_cfg(), run_dir) is None


def test_a_job_slurm_restarted_continues_from_last_ckpt(run_dir, monkeypatch):
    for k, v in {**SLURM, "SLURM_RESTART_COUNT": "1"}.items():
        monkeypatch.setenv(k, v)
    assert _resume_path(_cfg(), run_dir) == str(run_dir / "checkpoints" / "last.ckpt")
    assert _resume_path(_cfg("/elsewhere.ckpt"), run_dir) == "/elsewhere.ckpt"
    (run_dir / "checkpoints" / "last.ckpt").unlink()
    assert _resume_path(_cfg(), run_dir) is None


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_training_logs_one_line_not_lightnings_banners(train_store, tmp_path):
    import lightning.pytorch  # noqa: F401 - it sets its loggers to INFO on import

    lightning_records, swiftlib_records = _Records(), _Records()
    lightning_logger = logging.getLogger("lightning.pytorch")
    fit_logger = logging.getLogger("swiftlib.training.fit")
    lightning_logger.addHandler(lightning_records)
    fit_logger.addHandler(swiftlib_records)
    level = fit_logger.level
    fit_logger.setLevel(logging.INFO)
    try:
        res = fit(tiny_fit_config(train_store, tmp_path / "run"))
    finally:
        lightning_logger.removeHandler(lightning_records)
        fit_logger.removeHandler(swiftlib_records)
        fit_logger.setLevel(level)
    assert res.status == "ok"
    banners = [m for m in lightning_records.messages if "available" in m or "Tip" in m]
    assert banners == [], banners
    where = [m for m in swiftlib_records.messages if " on cpu: " in m]
    assert len(where) == 1 and "1 device(s) x 1 node(s)" in where[0], swiftlib_records.messages
    # the level is given back after the run; a level the user chose is kept
    assert lightning_logger.level == logging.INFO
    lightning_logger.setLevel(logging.DEBUG)
    try:
        with quiet_lightning():
            assert lightning_logger.level == logging.DEBUG
    finally:
        lightning_logger.setLevel(logging.INFO)


def test_the_srun_advice_is_held_back_outside_slurm_and_other_warnings_show():
    import warnings

    from lightning.fabric.utilities.rank_zero import rank_zero_warn

    from swiftlib.training.fit import quiet_lightning

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_lightning():
            rank_zero_warn("The `srun` command is available on your system but is not used.")
            rank_zero_warn("a warning a researcher must see")
    messages = [str(w.message) for w in seen]
    assert messages == ["a warning a researcher must see"], messages
