"""Pre-emption under SLURM: ``SIGUSR1`` → checkpoint at a step boundary → ``scontrol requeue``
→ the requeued job continues exactly where the signal stopped it.

Lightning's own SLURM handler (``SLURMEnvironment(auto_requeue=True)``) saves *inside* the
signal handler, wherever the interpreter happens to be: in a forward pass, between the
parameter updates of an optimiser step, inside a DDP collective (its save ends with a barrier
that the other ranks meet in a different collective). The progress counters and the loader's
position in such a checkpoint disagree by the batch in flight, so the resumed run repeats or
skips a batch, and a DDP job can hang. :class:`RequeueOnSignal` only notes the signal; at the
end of the next training batch (the ranks agree on it, so they all stop at the same step) it
writes the checkpoint — the state a mid-epoch ``last.ckpt`` has, which resumes exactly — asks
SLURM to requeue the job, and ends the fit with :class:`Requeued`.

The checkpoint is ``RUN_DIR/hpc_ckpt_<n>.ckpt``: the name Lightning resumes from. Inside a SLURM
job, ``Trainer.fit(ckpt_path=None)`` loads the highest-numbered ``hpc_ckpt_<n>.ckpt`` in its
``default_root_dir`` (swiftlib's run directory) by itself, so the requeued job — the same
``swiftlib run NOTEBOOK -o RUN_DIR`` — continues from it. It is written under a temporary
name and renamed when complete (a kill during the save leaves no half-written checkpoint);
the older ones are then removed. Before resuming, the checkpoint Lightning will load is
checked, so a damaged one fails with its path instead of a zip-reader error.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import zipfile
from pathlib import Path

from lightning.pytorch.callbacks import Checkpoint

from swiftlib.tasks.common import CheckpointError

__all__ = [
    "Requeued",
    "RequeueOnSignal",
    "requeue_checkpoints",
    "latest_requeue_checkpoint",
    "check_requeue_checkpoint",
    "in_slurm_batch_job",
]

log = logging.getLogger(__name__)

#: Lightning's name for the checkpoints its SLURM path resumes from (``hpc_ckpt_<n>.ckpt``).
PREFIX = "hpc_ckpt_"
_NAME = re.compile(rf"^{PREFIX}(\d+)\.ckpt$")
_PARTIAL = ".requeue-partial-"  # must not contain PREFIX: Lightning counts every name that does


class Requeued(RuntimeError):
    """The fit stopped because SLURM asked for the job's end and the job was requeued."""


def in_slurm_batch_job() -> bool:
    """True inside a SLURM job that is not an interactive allocation (Lightning's rule)."""
    return "SLURM_JOB_ID" in os.environ and os.environ.get("SLURM_JOB_NAME") not in (
        "bash",
        "interactive",
    )


def requeue_checkpoints(run_dir) -> list[Path]:
    """The ``hpc_ckpt_<n>.ckpt`` files (or DeepSpeed folders) in ``run_dir``, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m[1]), p) for p in run_dir.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_requeue_checkpoint(run_dir) -> Path | None:
    """The checkpoint a requeued job resumes from: the highest-numbered ``hpc_ckpt_<n>.ckpt``."""
    found = requeue_checkpoints(run_dir)
    return found[-1] if found else None


def check_requeue_checkpoint(path) -> Path:
    """Refuse a requeue checkpoint that cannot be a complete one (cut short, overwritten,
    empty): a torch zip archive whose ``data.pkl`` reads back, or a non-empty DeepSpeed folder."""
    path = Path(path)
    what = (
        "a complete checkpoint written when the previous attempt of this job received SIGUSR1 "
        "(a torch zip archive, or a DeepSpeed checkpoint folder)"
    )
    last = path.parent / "checkpoints" / "last.ckpt"
    fix = (
        f"replace it with a copy of {last} to continue from the last step saved there, or "
        if last.exists()
        else ""
    ) + "delete it to start the run from its beginning"
    if path.is_dir():
        from swiftlib.training.deepspeed import inspect_deepspeed_checkpoint

        try:  # every rank's shard present and readable
            inspect_deepspeed_checkpoint(path)
        except CheckpointError as e:
            raise CheckpointError(
                f"requeued job: cannot resume from {path}: {e}; expected {what}; {fix}"
            ) from None
        return path
    try:
        with zipfile.ZipFile(path) as z:
            pickles = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if not pickles:
                raise zipfile.BadZipFile("no data.pkl record")
            z.read(pickles[0])  # checks the record's CRC
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile) as e:
        size = path.stat().st_size if path.exists() else 0
        raise CheckpointError(
            f"requeued job: cannot resume from {path} ({size} bytes): not a readable checkpoint "
            f"({type(e).__name__}: {e}); expected {what}; {fix}"
        ) from None
    return path


def _late_signal(signum, frame) -> None:
    log.warning(
        "received signal %d after training: nothing left to checkpoint; evaluation goes on", signum
    )


def _job_id() -> str:
    array_job, array_task = (
        os.environ.get("SLURM_ARRAY_JOB_ID"),
        os.environ.get("SLURM_ARRAY_TASK_ID"),
    )
    return f"{array_job}_{array_task}" if array_job and array_task else os.environ["SLURM_JOB_ID"]


class RequeueOnSignal(Checkpoint):
    """On ``signum`` (default SIGUSR1), checkpoint into ``RUN_DIR/hpc_ckpt_<n>.ckpt`` at the end
    of the next training batch, run ``scontrol requeue <job>`` and stop with :class:`Requeued`.

    When that batch is the last of its epoch (or of training), the save waits for the end of
    the epoch — after validation and after ``best.ckpt``/``last.ckpt`` are written — so the
    resumed run does not skip that epoch's validation. It is a :class:`Checkpoint` callback so
    Lightning runs it after the ``ModelCheckpoint`` callbacks. A second signal before the save
    changes nothing (the kernel of ``swiftlib run`` gets SLURM's signal directly *and* forwarded
    by the runner). When ``scontrol`` fails, the checkpoint stays and training goes on: the
    job resubmitted into the same run directory resumes from it. After the fit a late signal
    is logged and ignored, so the final evaluation is not killed by SIGUSR1's default action.
    """

    def __init__(
        self,
        signum: int = signal.SIGUSR1,
        requeue_command: tuple[str, ...] = ("scontrol", "requeue"),
    ):
        self.signum = signum
        self.requeue_command = tuple(requeue_command)
        self._received = False  # set by the handler (main thread), read at step boundaries
        self._at_epoch_end = False
        self._previous = None
        self._installed = False

    # ddp_spawn pickles the callbacks; handlers stay in their process
    def __getstate__(self) -> dict:
        return {**self.__dict__, "_previous": None, "_installed": False}

    # -- signal handling ---------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        if not self._received:
            log.warning(
                "received signal %d: checkpointing at the next training step boundary, then "
                "requeueing",
                signum,
            )
        self._received = True

    def _install(self) -> None:
        if threading.current_thread() is threading.main_thread() and not self._installed:
            self._previous = signal.signal(self.signum, self._on_signal)
            self._installed = True

    def _restore(self) -> None:
        if self._installed and threading.current_thread() is threading.main_thread():
            previous = self._previous
            # SIGUSR1's default ends the process: not during evaluation
            if previous in (None, signal.SIG_DFL):
                previous = _late_signal
            signal.signal(self.signum, previous)
            self._installed = False

    # -- Lightning hooks ---------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        run_dir = Path(trainer.default_root_dir)
        if trainer.is_global_zero:
            for p in run_dir.glob(f"{_PARTIAL}*"):  # a save the previous attempt did not finish
                log.warning("removing the incomplete requeue checkpoint %s", p)
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        latest = latest_requeue_checkpoint(run_dir)
        if latest is not None:
            check_requeue_checkpoint(latest)
            log.info(
                "SLURM job %s (restart %s) resumes from %s",
                os.environ.get("SLURM_JOB_ID"),
                os.environ.get("SLURM_RESTART_COUNT", "0"),
                latest,
            )
        self._received = False
        self._at_epoch_end = False
        self._install()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # every rank takes part in the decision each step, so all of them stop at the same batch
        if self._at_epoch_end or not trainer.strategy.reduce_boolean_decision(
            self._received, all=False
        ):
            return
        last_batch = batch_idx + 1 >= trainer.num_training_batches
        if last_batch or 0 < trainer.max_steps <= trainer.global_step:
            self._at_epoch_end = True  # same decision on every rank: it was reduced
            return
        self._stop(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._at_epoch_end or trainer.strategy.reduce_boolean_decision(
            self._received, all=False
        ):
            self._stop(trainer)

    # -- saving and requeueing -----------------------------------------------------------
    def _stop(self, trainer) -> None:
        """Save, requeue (rank 0) and end the fit on every rank — or go on when requeueing
        failed."""
        path = self._save(trainer)
        requeued = self._requeue() if trainer.is_global_zero else False
        requeued = trainer.strategy.broadcast(requeued, src=0)
        self._received = False
        self._at_epoch_end = False
        if requeued:
            raise Requeued(
                f"SLURM job {_job_id()} was requeued after signal {int(self.signum)} (checkpoint "
                f"{path} at step {trainer.global_step}); the requeued job resumes from it"
            )
        log.warning(
            "the job was not requeued; training goes on (a job resubmitted into %s resumes from "
            "%s)",
            trainer.default_root_dir,
            path,
        )

    def _save(self, trainer) -> Path:
        run_dir = Path(trainer.default_root_dir)
        existing = requeue_checkpoints(run_dir)
        number = int(_NAME.match(existing[-1].name)[1]) + 1 if existing else 1
        final = run_dir / f"{PREFIX}{number}.ckpt"
        partial = run_dir / f"{_PARTIAL}{number}.ckpt"
        try:
            # every rank (DeepSpeed writes shards), ends with a barrier
            trainer.save_checkpoint(partial)
        except BaseException:
            # e.g. disk full: leave nothing half-written
            if trainer.is_global_zero and partial.exists():
                shutil.rmtree(partial) if partial.is_dir() else partial.unlink()
            raise
        if trainer.is_global_zero:
            os.replace(partial, final)
            for old in existing:
                shutil.rmtree(old) if old.is_dir() else old.unlink()
            log.warning("requeue checkpoint written: %s (step %d)", final, trainer.global_step)
        trainer.strategy.barrier("swiftlib.requeue.save")
        return final

    def _requeue(self) -> bool:
        cmd = [*self.requeue_command, _job_id()]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            log.error("%s failed: %s", " ".join(cmd), e)
            return False
        if proc.returncode != 0:
            log.error(
                "%s failed (%d): %s",
                " ".join(cmd),
                proc.returncode,
                (proc.stderr or proc.stdout).strip(),
            )
            return False
        log.warning("requeued SLURM job %s", cmd[-1])
        return True
