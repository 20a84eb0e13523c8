"""``fit(cfg) -> RunResult``: the one training entry point (notebooks, CLI, tests, Optuna).

Seeds everything; builds data, task and Trainer; fits; validates and tests the **best**
checkpoint; writes ``results.json`` (metrics, resolved config, artifacts, timings,
versions) into the run directory beside ``checkpoints/`` (best by the task's monitored
metric + ``last.ckpt``), ``tensorboard/`` logs and ``config.yaml``.

``task.init_from`` loads weights into a *new* run; ``resume_from`` continues an
interrupted run exactly (optimiser, scheduler, epoch, position in the epoch, RNG).

What a run continues from (:func:`_resume_path`), first match wins:

1. inside a SLURM batch job, the newest ``RUN_DIR/hpc_ckpt_<n>.ckpt`` (a pre-emption:
   :mod:`swiftlib.training.requeue` wrote it at a step boundary), even when ``resume_from``
   is set — otherwise every requeue would restart from the same older checkpoint;
2. ``resume_from`` when set (the SLURM templates pass ``RUN_DIR/checkpoints/last.ckpt`` on a
   rerun after a crash that was not a pre-emption);
3. inside a SLURM job that SLURM restarted (``SLURM_RESTART_COUNT`` > 0, e.g. a node
   failure), ``RUN_DIR/checkpoints/last.ckpt`` when it exists;
4. nothing: a new run from step 0.

Lightning's INFO banners (accelerator availability, the model-registry tip, the distributed
set-up banner) are held back while ``fit`` runs; one ``swiftlib`` log line says where training
runs (and, in a multi-process job, one Lightning line per rank says which member it is).
Under ``ddp_spawn`` each worker process ends its process group together with the others
before it exits (:class:`EndProcessGroup`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import numpy as np

from swiftlib.results import save_results
from swiftlib.training.config import FitConfig
from swiftlib.utils.io import atomic_path, atomic_write_text

__all__ = [
    "RunResult",
    "TrainingError",
    "fit",
    "monitor_for",
    "write_outputs",
    "RunOutputs",
    "EndProcessGroup",
    "quiet_lightning",
]

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """A run failed; ``results.json`` says why and the last good checkpoint is kept."""


@dataclass
class RunResult:
    run_dir: Path
    status: str
    metrics: dict = field(default_factory=dict)
    best_checkpoint: str | None = None
    last_checkpoint: str | None = None
    results_path: Path | None = None
    monitor: str = ""
    error: str | None = None


def monitor_for(cfg: FitConfig, label_task: str | None = None) -> tuple[str, str]:
    from swiftlib.tasks.contrastive import CONTRASTIVE_MONITOR
    from swiftlib.tasks.finetune import MONITOR
    from swiftlib.tasks.pretrain import PRETRAIN_MONITOR

    if cfg.kind == "pretrain":
        return PRETRAIN_MONITOR
    if cfg.kind == "contrastive":
        return CONTRASTIVE_MONITOR
    return MONITOR[label_task or cfg.task.task]


def _prepare_task_config(cfg: FitConfig, dm) -> None:
    """Fill what only the data knows: label task and classes, regression scaler, contract,
    the LR schedule's length (``optim.total_steps``)."""
    task = cfg.task
    contract = dm.contract()
    if cfg.kind == "finetune":
        # task="auto" takes the type (and classes) the store declares for the label; an
        # explicit task must equal it (the message names the notebook parameters)
        task = task.for_label(
            dm.label_task, dm.num_classes, where=f"store {cfg.data.store_paths[0]}"
        )
        updates = {"contract": contract}
        if task.task == "regression":  # standardise the target with training *subjects*
            ds = dm.train_dataset
            store = ds.store
            sids = sorted(set(ds.subject_ids))
            y = store.subjects.loc[sids, task.label].astype(float).to_numpy()
            updates["target_mean"] = float(np.mean(y))
            updates["target_std"] = float(np.std(y)) or 1.0
        cfg.task = dataclasses.replace(task, **updates)
    else:
        cfg.task = dataclasses.replace(task, contract=contract)
    # the LR schedule's length, from the data (a set value is kept)
    if cfg.task.optim.total_steps is None:
        steps = planned_steps(cfg, dm.num_train_samples)
        cfg.task = dataclasses.replace(
            cfg.task, optim=dataclasses.replace(cfg.task.optim, total_steps=steps)
        )


def planned_steps(cfg: FitConfig, num_train_windows: int) -> int:
    """Optimiser steps the run will take (sets the LR schedule's length)."""
    t, d = cfg.trainer, cfg.data
    per_rank = math.ceil(num_train_windows / t.world_size)
    # contrastive pairs: the train loader drops a partial last batch
    batches = (
        per_rank // d.per_device_batch_size
        if d.pairs
        else math.ceil(per_rank / d.per_device_batch_size)
    )
    lim = t.limit_train_batches
    batches = min(batches, lim) if isinstance(lim, int) else max(1, int(batches * lim))
    per_epoch = math.ceil(batches / t.accumulate_grad_batches)
    by_epochs = per_epoch * t.max_epochs if t.max_epochs > 0 else None
    if t.max_steps > 0:
        return t.max_steps if by_epochs is None else min(t.max_steps, by_epochs)
    return by_epochs


def _check_resume(cfg: FitConfig) -> None:
    """``resume_from`` must be a checkpoint of the same kind of run with the same model; a
    DeepSpeed checkpoint (a folder) also needs the same strategy and world size."""
    from swiftlib.tasks.common import CHECKPOINT_KEY, CheckpointError, read_checkpoint

    p = Path(cfg.resume_from)
    t = cfg.trainer
    deepspeed_run = t.strategy.startswith("deepspeed")
    if p.is_dir():
        from swiftlib.training.deepspeed import inspect_deepspeed_checkpoint

        info = inspect_deepspeed_checkpoint(p)  # complete, every shard weights-only safe
        meta = info["meta"] or {}
        if not deepspeed_run:
            raise CheckpointError(
                f"resume_from={str(p)!r} is a DeepSpeed ZeRO-{info['zero_stage']} checkpoint; "
                "resume it with a DeepSpeed strategy "
                f"(trainer.strategy='deepspeed_stage_{max(info['zero_stage'], 1)}'), or start a "
                "new run from its weights with task.init_from"
            )
        if info["zero_stage"] >= 1 and info["world_size"] != t.world_size:
            raise CheckpointError(
                f"resume_from={str(p)!r} holds ZeRO-{info['zero_stage']} shards of "
                f"{info['world_size']} ranks; this run has {t.world_size} (devices {t.devices} × "
                f"num_nodes {t.num_nodes}). Resume with the same scale, or start a new run from "
                "its weights with task.init_from (any scale)"
            )
    elif not p.is_file():
        raise FileNotFoundError(
            f"resume_from={cfg.resume_from!r} does not exist; expected the last.ckpt of the "
            "interrupted run"
        )
    else:
        if deepspeed_run:
            raise CheckpointError(
                f"resume_from={str(p)!r} is a single file, but this run uses {t.strategy}, which "
                "resumes from the checkpoint folder a DeepSpeed run writes "
                "(checkpoints/last.ckpt/); to start from these weights use task.init_from"
            )
        meta = read_checkpoint(p).get(CHECKPOINT_KEY) or {}
    kind = {"pretrain": "pretrain", "contrastive": "contrastive", "finetune": "finetune"}.get(
        meta.get("kind")
    )
    if kind != cfg.kind or meta.get("model") != cfg.task.model:
        raise CheckpointError(
            f"resume_from={str(p)!r} is a {meta.get('kind') or 'non-swiftlib'} checkpoint of model "
            f"{meta.get('model')!r}; this run is {cfg.kind!r} with model {cfg.task.model!r}. To "
            "start a new run from its weights use task.init_from instead"
        )


def _strategy(cfg: FitConfig, strategy_cls=None):
    t = cfg.trainer
    if t.strategy.startswith("deepspeed"):
        from swiftlib.training.deepspeed import build_deepspeed_strategy

        return build_deepspeed_strategy(t, cfg.data, strategy_cls)
    if t.strategy.startswith("ddp_spawn"):
        # ddp_spawn pickles the task into each worker through shared memory; with torch's
        # default file-descriptor strategy the SimMIM task's storages fail to map in the
        # child ("unable to resize file ... Invalid argument (22)"). File-system sharing works.
        import torch.multiprocessing as mp

        mp.set_sharing_strategy("file_system")
    if t.strategy == "ddp" and t.world_size == 1:
        # one process has nothing to synchronise; Lightning's DDP would also plan a launcher,
        # which it refuses in a notebook kernel. (A preset's ddp run rehearsed on one device.)
        log.info("strategy ddp with 1 device: running single-device")
        return "auto"
    return "auto" if t.strategy == "single" else t.strategy


def _loggers(cfg: FitConfig, run_dir: Path) -> list:
    from lightning.pytorch.loggers import TensorBoardLogger

    loggers = [
        TensorBoardLogger(
            save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False
        )
    ]
    if cfg.trainer.neptune_project:
        token = os.environ.get("NEPTUNE_API_TOKEN")
        if not token:
            raise ValueError(
                "trainer.neptune_project is set but NEPTUNE_API_TOKEN is not in the environment; "
                "export it (it is never written to disk)"
            )
        from lightning.pytorch.loggers import NeptuneLogger

        loggers.append(
            NeptuneLogger(project=cfg.trainer.neptune_project, log_model_checkpoints=False)
        )
    return loggers


def _slurm_plugins() -> list:
    if "SLURM_JOB_ID" not in os.environ or os.environ.get("SLURM_JOB_NAME") in (
        "bash",
        "interactive",
    ):
        return []
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    # no Lightning SIGUSR1 handler: it saves mid-step (inexact resume); RequeueOnSignal below
    # saves RUN_DIR/hpc_ckpt_<n>.ckpt at a step boundary and requeues (training/requeue.py)
    return [SLURMEnvironment(auto_requeue=False)]


#: Lightning's loggers; their INFO messages are banners in a notebook cell (stderr, red)
_LIGHTNING_LOGGERS = (
    "lightning.pytorch",
    "lightning.fabric",
    "pytorch_lightning",
    "lightning_fabric",
)
_MEMBER_LOGGER = "lightning.fabric.utilities.distributed"


@contextlib.contextmanager
def quiet_lightning():
    """Lightning's INFO messages ("GPU available: …", "TPU available: …", "💡 Tip: … litmodels",
    "distributed_backend=… All distributed processes registered") held back inside the block;
    warnings and errors still show, and so does each rank's one "Initializing distributed:
    GLOBAL_RANK: r, MEMBER: r+1/N" line in a multi-process job.
    Lightning sets its loggers to INFO when it is imported, after a notebook's ``nb.setup()``,
    so this is done where training runs. A level a user set lower (DEBUG) is kept."""
    saved = {}
    for name in _LIGHTNING_LOGGERS:
        lg = logging.getLogger(name)
        if lg.level in (logging.NOTSET, logging.INFO):
            saved[name] = lg.level
            lg.setLevel(logging.WARNING)
    # kept: in a multi-process job each rank says which member it is, one line
    # ("Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2")
    member = logging.getLogger(_MEMBER_LOGGER)
    if member.level == logging.NOTSET:
        saved[_MEMBER_LOGGER] = member.level
        member.setLevel(logging.INFO)
    try:
        with warnings.catch_warnings():
            # outside a SLURM job, on a machine with SLURM installed (a login node, a local
            # test cluster), Lightning advises "The `srun` command is available on your system
            # but is not used" in every training cell: swiftlib's SLURM templates use srun
            warnings.filterwarnings("ignore", message=r"The `srun` command is available")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


class EndProcessGroup(pl.Callback):
    """``ddp_spawn``/``ddp_fork`` workers: end the process group (a barrier, then
    ``destroy_process_group``) when the stage's teardown runs, before the worker exits.

    Lightning creates a gloo process group in every worker and, for gloo, never destroys it
    (it registers an ``atexit`` destroy for NCCL only). The group — its gloo worker threads
    and the TCP store that rank 0 serves — was then torn down by the interpreter's exit, in
    no defined order: a rank whose peer (rank 0, with the store) had already gone could destroy
    a ``std::thread`` that was still joinable, and C++ aborts the process with "terminate
    called without an active exception" (SIGABRT). ``fit`` spawns workers twice (fit, then
    validate/test), so the post-fit evaluation met it. Ending the group here, while every
    rank is still alive and at the same point, leaves nothing for the exit to tear down."""

    def teardown(self, trainer, pl_module, stage: str) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _spawns_workers(cfg: FitConfig) -> bool:
    return cfg.trainer.strategy.startswith(("ddp_spawn", "ddp_fork", "ddp_notebook"))


def _announce(trainer, cfg: FitConfig) -> None:
    """The one line a notebook cell shows about where training runs (instead of Lightning's
    banners)."""
    if trainer.global_rank != 0:
        return
    accelerator = type(trainer.accelerator).__name__.replace("Accelerator", "").lower()
    log.info(
        "%s %s on %s: %d device(s) x %d node(s), strategy %s, precision %s, run dir %s",
        cfg.kind,
        cfg.task.model,
        accelerator,
        trainer.num_devices,
        trainer.num_nodes,
        cfg.trainer.strategy,
        trainer.precision,
        cfg.run_dir,
    )


def build_trainer(
    cfg: FitConfig, run_dir: Path, monitor: tuple[str, str], extra_callbacks=(), strategy_cls=None
):
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

    from swiftlib.training.requeue import RequeueOnSignal, in_slurm_batch_job

    t = cfg.trainer
    ckpt = ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"),
        filename="best",
        monitor=monitor[0],
        mode=monitor[1],
        save_top_k=1,
        save_last=False,
        enable_version_counter=False,
    )
    # "last.ckpt" is its own callback without a monitor, so it is also written mid-epoch
    # (every_n_train_steps) — the file resume_from continues from.
    last = ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"),
        filename="last",
        save_top_k=1,
        enable_version_counter=False,
        every_n_train_steps=t.checkpoint_every_n_steps,
    )
    callbacks = [ckpt, last, LearningRateMonitor(logging_interval="step"), *extra_callbacks]
    callbacks += [RequeueOnSignal()] if in_slurm_batch_job() else []
    callbacks += [EndProcessGroup()] if _spawns_workers(cfg) else []
    if t.early_stopping_patience is not None:
        callbacks.append(
            EarlyStopping(monitor=monitor[0], mode=monitor[1], patience=t.early_stopping_patience)
        )
    trainer = pl.Trainer(
        default_root_dir=str(run_dir),
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=_strategy(cfg, strategy_cls),
        precision=t.precision,
        accumulate_grad_batches=t.accumulate_grad_batches,
        # DeepSpeed clips inside its engine (gradient_clipping in its config)
        gradient_clip_val=None if t.strategy.startswith("deepspeed") else t.gradient_clip_val,
        log_every_n_steps=t.log_every_n_steps,
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        deterministic=t.deterministic,
        enable_progress_bar=t.enable_progress_bar,
        callbacks=callbacks,
        logger=_loggers(cfg, run_dir),
        plugins=_slurm_plugins(),
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        enable_model_summary=False,
    )
    return trainer, ckpt, last


def fit(cfg: FitConfig | dict, callbacks=(), strategy_cls=None, test: bool = True) -> RunResult:
    """Train as ``cfg`` says; return a :class:`RunResult` (and write ``results.json``).

    Raises :class:`TrainingError` (after writing a ``failed`` results.json) when training
    fails, e.g. on a non-finite loss; the last good checkpoint stays in ``checkpoints/``.
    ``callbacks`` are extra Lightning callbacks; ``strategy_cls`` replaces Lightning's
    DeepSpeed strategy class (tests run the DeepSpeed path on CPU with a subclass).
    ``test=False`` skips the test split (hyper-parameter search: trials are selected on
    validation only; :mod:`swiftlib.training.tune` scores the chosen trial once).
    What a run resumes from: the module docstring.
    """
    with quiet_lightning():
        return _fit(cfg, callbacks, strategy_cls, test)


def _fit(cfg: FitConfig | dict, callbacks, strategy_cls, test: bool) -> RunResult:
    import torch
    import yaml

    from swiftlib.data.datamodule import FMRIDataModule
    from swiftlib.tasks.contrastive import ContrastiveTask
    from swiftlib.tasks.finetune import FinetuneTask
    from swiftlib.tasks.pretrain import SimMIMTask

    cfg = FitConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg
    t0 = time.perf_counter()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.resume_from is not None:
        _check_resume(cfg)

    dm = FMRIDataModule(cfg.data)
    dm.setup("fit")
    _prepare_task_config(cfg, dm)
    monitor = monitor_for(cfg, dm.label_task)
    task_cls = {"pretrain": SimMIMTask, "contrastive": ContrastiveTask, "finetune": FinetuneTask}
    task = task_cls[cfg.kind](cfg.task)
    # results.json kinds are stages: a contrastive run is a pretraining run (parameters.kind says
    # which)
    results_kind = "pretrain" if cfg.kind == "contrastive" else cfg.kind
    outputs_cb = RunOutputs(run_dir)
    trainer, ckpt_cb, last_cb = build_trainer(
        cfg, run_dir, monitor, [outputs_cb, *callbacks], strategy_cls
    )
    _announce(trainer, cfg)
    if trainer.is_global_zero:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    timings: dict[str, float] = {}
    metrics: dict[str, float] = {}
    artifacts = {"config": run_dir / "config.yaml", "tensorboard": run_dir / "tensorboard"}
    try:
        t1 = time.perf_counter()
        trainer.fit(task, datamodule=dm, ckpt_path=_resume_path(cfg, run_dir))
        timings["fit_s"] = time.perf_counter() - t1
        metrics.update(
            {
                k: float(v)
                for k, v in trainer.callback_metrics.items()
                if k.startswith("train/") and v.numel() == 1
            }
        )
        best = ckpt_cb.best_model_path or None
        last = last_cb.best_model_path or None
        t1 = time.perf_counter()
        if cfg.trainer.strategy.startswith("deepspeed"):
            fp32 = _consolidate(trainer, best, last)
            artifacts.update({f"{k}_checkpoint_fp32": v for k, v in fp32.items()})
            eval_trainer, eval_task, eval_ckpt = _deepspeed_evaluator(
                cfg, task, fp32.get("best") or fp32.get("last"), run_dir, outputs_cb
            )
        else:
            eval_trainer, eval_task, eval_ckpt = trainer, task, best or last
        for split in ("val", "test"):
            if split == "test" and not test:
                continue
            # pretraining tasks score splits in validate
            if cfg.kind in ("pretrain", "contrastive") and split == "test":
                outputs_cb.enabled = False  # reconstructions.pt keeps the validation windows
                out = eval_trainer.validate(
                    eval_task, dataloaders=dm.test_dataloader(), ckpt_path=eval_ckpt, verbose=False
                )
                outputs_cb.enabled = True
                metrics.update({k.replace("val/", "test/"): float(v) for k, v in out[0].items()})
            else:  # RunOutputs writes this pass's predictions / reconstructions
                runner = eval_trainer.validate if split == "val" else eval_trainer.test
                out = runner(eval_task, datamodule=dm, ckpt_path=eval_ckpt, verbose=False)
                metrics.update(
                    {k: float(v) for k, v in out[0].items() if k.startswith(split + "/")}
                )
        timings["eval_s"] = time.perf_counter() - t1
        artifacts.update(best_checkpoint=best, last_checkpoint=last)
        artifacts.update(_outputs(run_dir))
        status, error = "ok", None
    except (FloatingPointError, RuntimeError, ValueError, KeyboardInterrupt) as e:
        status, error, failure = "failed", f"{type(e).__name__}: {e}", e
        artifacts.update(last_checkpoint=last_cb.best_model_path or None)

    def record() -> Path | None:  # results.json on rank 0, ok or failed
        timings["total_s"] = time.perf_counter() - t0
        if not trainer.is_global_zero:
            return None
        return save_results(
            run_dir,
            results_kind,
            metrics,
            cfg.to_dict(),
            artifacts,
            timings,
            status=status,
            error=error,
            extra={"monitor": monitor[0]},
        )

    results_path = record()
    if status == "failed":
        raise TrainingError(f"run {run_dir} failed: {error}") from failure
    log.info("run %s: %s", run_dir, {k: round(v, 4) for k, v in metrics.items()})
    return RunResult(
        run_dir,
        status,
        metrics,
        artifacts.get("best_checkpoint"),
        artifacts.get("last_checkpoint"),
        results_path,
        monitor[0],
        error,
    )


def _resume_path(cfg: FitConfig, run_dir: Path) -> str | None:
    """What ``trainer.fit`` continues from (the order is in the module docstring). In a SLURM
    batch job that was requeued, the newest ``RUN_DIR/hpc_ckpt_<n>.ckpt`` wins (``None`` here:
    Lightning loads it itself), also over ``resume_from``, which would otherwise restart every
    attempt from the same place; then ``resume_from``; a job SLURM restarted without either
    (a node failure) continues from ``checkpoints/last.ckpt``."""
    from swiftlib.training.requeue import in_slurm_batch_job, latest_requeue_checkpoint

    if not in_slurm_batch_job():
        return cfg.resume_from
    hpc = latest_requeue_checkpoint(run_dir)
    if hpc is not None:
        if cfg.resume_from:
            log.info("requeued job: resuming from %s, not resume_from=%s", hpc, cfg.resume_from)
        return None
    last = run_dir / "checkpoints" / "last.ckpt"
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    if cfg.resume_from is None and restarts.isdigit() and int(restarts) > 0 and last.exists():
        log.warning(
            "SLURM restarted this job (restart %s) without a requeue checkpoint (a node failure?): "
            "continuing from %s",
            restarts,
            last,
        )
        return str(last)
    return cfg.resume_from


def _consolidate(trainer, best: str | None, last: str | None) -> dict:
    """End of a DeepSpeed run: rank 0 gathers ``best``/``last`` (ZeRO folders) into
    ``best.fp32.ckpt``/``last.fp32.ckpt`` beside them while the other ranks wait; every
    downstream stage reads those (or converts the folder itself if they are missing)."""
    from swiftlib.training.deepspeed import consolidated_checkpoint, current_consolidated

    folders = {
        name: path
        for name, path in (("best", best), ("last", last))
        if path and Path(path).is_dir()
    }
    trainer.strategy.barrier("swiftlib_consolidate_start")
    error = None
    if trainer.is_global_zero:
        try:
            for path in folders.values():
                consolidated_checkpoint(path)
        except Exception as e:  # noqa: BLE001 - raised below, after the other ranks are released
            error = e
    trainer.strategy.barrier("swiftlib_consolidate_end")  # no rank waits on a rank 0 that failed
    if error is not None:
        raise RuntimeError(f"consolidating the DeepSpeed checkpoints failed: {error}") from error
    out = {name: current_consolidated(path) for name, path in folders.items()}
    missing = [name for name, path in out.items() if path is None]
    # another rank: the file rank 0 wrote is not visible here (not a shared file system?)
    if missing:
        raise RuntimeError(
            f"the consolidated {missing} checkpoint(s) of {[folders[m] for m in missing]} are not "
            "readable on this rank; checkpoints must live on a file system every node shares"
        )
    return {name: str(path) for name, path in out.items()}


def _deepspeed_evaluator(cfg: FitConfig, task, fp32_path: str | None, run_dir: Path, outputs_cb):
    """A plain (DDP or single-device) Trainer and a fresh task holding the consolidated fp32
    weights. DeepSpeed's own checkpoint loading for evaluation fails under ZeRO-3
    ("'DeepSpeedZeRoOffload' object has no attribute '_restore_from_bit16_weights'", DeepSpeed
    0.19), and scoring the same fp32 file downstream stages read keeps the numbers identical."""
    from swiftlib.tasks.common import read_checkpoint

    if fp32_path is None:
        raise RuntimeError(
            "the DeepSpeed run wrote no checkpoint to evaluate (checkpoints/ is empty)"
        )
    t = cfg.trainer
    # the weights below replace any initialisation
    fresh_cfg = dataclasses.replace(cfg.task, init_from=None)
    eval_task = type(task)(fresh_cfg)
    missing, unexpected = eval_task.load_state_dict(
        read_checkpoint(fp32_path)["state_dict"], strict=False
    )
    missing = [k for k in missing if not k.endswith("relative_position_index")]
    if missing or unexpected:
        raise RuntimeError(
            f"{fp32_path}: consolidated weights do not fit the task (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]})"
        )
    # its root is checkpoints/, never the run directory: under SLURM a Trainer called with
    # ckpt_path=None loads any hpc_ckpt_<n>.ckpt in its root, and requeue writes those there
    trainer = pl.Trainer(
        default_root_dir=str(run_dir / "checkpoints"),
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy="ddp" if t.world_size > 1 else "auto",
        precision=t.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=t.enable_progress_bar,
        callbacks=[outputs_cb],
        enable_model_summary=False,
        use_distributed_sampler=False,
        plugins=_slurm_plugins(),
    )
    return trainer, eval_task, None


def write_outputs(run_dir: Path, task, split: str) -> None:
    """What a task kept from its last ``split`` pass, as files in the run directory: a
    fine-tuning task's per-subject ``predictions_<split>.csv``; a SimMIM task's example
    ``reconstructions.pt`` (validation only). The tasks do no file I/O themselves."""
    import torch

    predictions = getattr(task, "predictions", {}).get(split)
    if predictions is not None:
        atomic_write_text(run_dir / f"predictions_{split}.csv", predictions.to_csv(index=False))
    examples = getattr(task, "examples", None)
    if split == "val" and examples:
        with atomic_path(run_dir / "reconstructions.pt") as tmp:
            torch.save(examples, tmp)


class RunOutputs(pl.Callback):
    """Rank 0 writes what the task kept from a validation / test pass into the run directory
    (:func:`write_outputs`): refreshed after each validation during training, so a long run
    can be looked at, and finally from the evaluated checkpoint. A callback rather than code
    after ``trainer.test`` because under ``ddp_spawn`` the pass runs in worker processes.
    ``enabled=False`` skips a pass (SimMIM's test split runs through ``validate``)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.enabled = True

    def _write(self, trainer, pl_module, split: str) -> None:
        if self.enabled and trainer.is_global_zero and not trainer.sanity_checking:
            write_outputs(self.run_dir, pl_module, split)

    # *_end, not *_epoch_end: Lightning calls callbacks' epoch-end hooks before the task's,
    # which is where the task assembles its per-subject predictions
    def on_validation_end(self, trainer, pl_module):
        self._write(trainer, pl_module, "val")

    def on_test_end(self, trainer, pl_module):
        self._write(trainer, pl_module, "test")


def _outputs(run_dir: Path) -> dict:
    """Per-subject predictions (fine-tuning) and example reconstructions (pretraining) that
    the task's rank 0 wrote into the run directory."""
    names = ("predictions_val.csv", "predictions_test.csv", "reconstructions.pt")
    return {Path(n).stem: run_dir / n for n in names if (run_dir / n).exists()}
