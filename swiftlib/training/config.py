"""Run configuration: what ``fit`` needs, built from plain dictionaries (notebook
parameters, YAML) and rejected early when something is unknown or inconsistent."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from swiftlib.data.datamodule import DataConfig
from swiftlib.tasks.contrastive import ContrastiveConfig
from swiftlib.tasks.finetune import FinetuneConfig
from swiftlib.tasks.pretrain import PretrainConfig
from swiftlib.utils.config import ConfigError, config_from_dict, config_to_dict
from swiftlib.utils.validation import did_you_mean

__all__ = [
    "TrainerConfig",
    "FitConfig",
    "KINDS",
    "PRECISIONS",
    "STRATEGIES",
    "RECIPES",
    "SMALL_COHORT_CPU",
    "recipe_fit_config",
    "label_task_type",
]

PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true")
# run kind -> its task's config: SimMIM pretraining, contrastive (NT-Xent) pretraining, fine-tuning
KINDS = {"pretrain": PretrainConfig, "contrastive": ContrastiveConfig, "finetune": FinetuneConfig}
STRATEGIES = (
    "auto",
    "single",
    "ddp",
    "ddp_spawn",
    "deepspeed_stage_1",
    "deepspeed_stage_2",
    "deepspeed_stage_2_offload",
    "deepspeed_stage_3",
    "deepspeed_stage_3_offload",
)


@dataclass
class TrainerConfig:
    """Lightning Trainer settings (scale, precision, checkpoint cadence)."""

    max_epochs: int = 3
    max_steps: int = -1  # -1 = no step limit
    accelerator: str = "auto"  # auto | cpu | gpu
    devices: int = 1  # per node
    num_nodes: int = 1
    strategy: str = "auto"  # see STRATEGIES
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = 1.0
    log_every_n_steps: int = 5
    limit_train_batches: int | float = 1.0  # int = batches, float = fraction
    limit_val_batches: int | float = 1.0
    check_val_every_n_epoch: int = 1
    checkpoint_every_n_steps: int | None = None  # also write last.ckpt every n steps (mid-epoch)
    early_stopping_patience: int | None = None  # epochs without improvement of the monitor
    deterministic: bool = False
    enable_progress_bar: bool = True
    num_threads: int | None = None  # torch CPU threads (None = leave as is)
    deepspeed_config: dict | None = None  # extra DeepSpeed config entries (validated)
    neptune_project: str | None = None  # log to Neptune too (token from NEPTUNE_API_TOKEN only)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ConfigError(f"trainer.precision={self.precision!r}: expected one of {PRECISIONS}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"trainer.strategy={self.strategy!r}: expected one of {STRATEGIES}")
        for name in (
            "devices",
            "num_nodes",
            "accumulate_grad_batches",
            "check_val_every_n_epoch",
            "log_every_n_steps",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"trainer.{name}={getattr(self, name)}: expected ≥ 1")
        if self.max_epochs < 1 and self.max_steps < 1:
            raise ConfigError(
                f"trainer.max_epochs={self.max_epochs} and max_steps={self.max_steps}: set one ≥ 1"
            )

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes


@dataclass
class FitConfig:
    """One training run: ``kind`` selects the task (``pretrain`` = SimMIM, ``contrastive`` =
    NT-Xent between two windows of a subject, ``finetune``)."""

    kind: Literal["pretrain", "contrastive", "finetune"] = "finetune"
    run_dir: str = "papermill_runs/fit"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    task: PretrainConfig | ContrastiveConfig | FinetuneConfig = field(
        default_factory=FinetuneConfig
    )
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    resume_from: str | None = None  # exact continuation of an interrupted run (its last.ckpt)

    def __post_init__(self):
        want = KINDS[self.kind]
        if isinstance(self.task, dict):
            self.task = want.from_dict(self.task)
        if not isinstance(self.task, want):
            raise ConfigError(
                f"kind={self.kind!r} needs a {want.__name__} task, got {type(self.task).__name__}"
            )
        if isinstance(self.data, dict):
            self.data = DataConfig.from_dict(self.data)
        if isinstance(self.trainer, dict):
            self.trainer = config_from_dict(TrainerConfig, self.trainer)
        # one source of truth for the batch arithmetic: the trainer's scale
        t = self.trainer
        if (self.data.num_devices, self.data.accumulate_grad_batches) != (
            t.world_size,
            t.accumulate_grad_batches,
        ):
            self.data = dataclasses.replace(
                self.data,
                num_devices=t.world_size,
                accumulate_grad_batches=t.accumulate_grad_batches,
            )
        if self.kind == "finetune":
            if self.data.label is None:
                self.data = dataclasses.replace(self.data, label=self.task.label)
            elif self.data.label != self.task.label:
                raise ConfigError(
                    f"data.label={self.data.label!r} but task.label={self.task.label!r}; make them "
                    "equal"
                )
        elif self.data.label is not None:
            self.data = dataclasses.replace(self.data, label=None)
        # contrastive batches hold pairs of windows
        if self.data.pairs != (self.kind == "contrastive"):
            self.data = dataclasses.replace(self.data, pairs=self.kind == "contrastive")

    @classmethod
    def from_dict(cls, d: dict) -> FitConfig:
        d = dict(d)
        kind = d.get("kind", "finetune")
        if kind not in KINDS:
            raise ConfigError(
                f"kind={kind!r}: expected one of {sorted(KINDS)}{did_you_mean(str(kind), KINDS)}"
            )
        task = d.pop("task", {})
        if isinstance(task, dict):
            task = KINDS[kind].from_dict(task)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            hint = "; ".join(f"{k!r}{did_you_mean(k, known)}" for k in unknown)
            raise ConfigError(f"unknown run setting(s) {hint}; valid: {sorted(known)}")
        return cls(
            kind=kind,
            run_dir=str(d.get("run_dir", cls.run_dir)),
            seed=int(d.get("seed", 0)),
            data=d.get("data", {}),
            task=task,
            trainer=d.get("trainer", {}),
            resume_from=d.get("resume_from"),
        )

    def to_dict(self) -> dict:
        return config_to_dict(self)


#: The measured "small cohort, CPU" recipe (docs/notebooks.md, "The demo recipe"): the CPU
#: demo preset (notebooks/params/cpu_demo.yaml) and the notebooks' defaults equal it (tests
#: check), and the science checks and the second-cohort check train with it. ``cohort`` holds
#: :class:`~swiftlib.data.synthetic.SyntheticConfig` fields; the rest are fit() settings.
SMALL_COHORT_CPU: dict = {
    "cohort": {
        "num_subjects": 136,
        "num_frames": 90,
        "voxel_size": 8.0,
        "tr": 0.8,
        "normalisation": "psc",
        "baseline_coupling": -0.9,
    },
    "model": "swift_v2_5m",
    "model_overrides": {
        "patch_size": [6, 6, 6, 2],
        "depths": [1, 1, 1],
        "num_heads": [2, 4, 8],
        "embed_dim": 24,
        "drop_path_rate": 0.0,
        "layer_scale_init": 0.0,
    },
    "data": {
        "sequence_length": 20,
        "stride_within_seq": 3,
        "stride_between_seq": 0.01,
        "windows_per_subject": 4,
        "eval_stride_between_seq": 1.0,
        "batch_size": 8,
    },
    "pretrain": {"lr": 1.5e-3, "max_epochs": 3, "mask_ratio": 0.5},
    "finetune": {"lr": 1e-3, "max_epochs": 5},
}
RECIPES: dict[str, dict] = {"small_cohort_cpu": SMALL_COHORT_CPU}


def recipe_fit_config(
    name: str,
    kind: str,
    run_dir,
    store_path,
    splits_dir,
    label: str | None = None,
    task: str = "classification",
    seed: int = 0,
    **trainer,
) -> FitConfig:
    """A :class:`FitConfig` of recipe ``name`` (:data:`RECIPES`) for ``kind`` ``pretrain``
    or ``finetune`` (``label`` and its ``task`` type required); ``trainer`` entries (e.g.
    ``max_epochs``) override the recipe's."""
    if name not in RECIPES:
        raise ConfigError(f"recipe={name!r}: expected one of {sorted(RECIPES)}")
    if kind not in ("pretrain", "finetune"):
        raise ConfigError(f"recipe_fit_config kind={kind!r}: expected 'pretrain' or 'finetune'")
    r = RECIPES[name]
    stage = dict(r[kind])
    lr, max_epochs = stage.pop("lr"), stage.pop("max_epochs")
    settings: dict = {"model": r["model"], "model_overrides": dict(r["model_overrides"]), **stage}
    settings["optim"] = {"lr": lr, "weight_decay": 0.05, "warmup_fraction": 0.1}
    data = {**r["data"], "store_path": str(store_path), "splits_dir": str(splits_dir)}
    data["num_workers"] = 0
    if kind == "finetune":
        if label is None:
            raise ConfigError("recipe_fit_config('finetune'): pass the label to predict")
        settings.update(label=label, task=task)
    tr = {"max_epochs": max_epochs, "enable_progress_bar": False, "accelerator": "cpu", **trainer}
    return FitConfig.from_dict(
        {
            "kind": kind,
            "run_dir": str(run_dir),
            "seed": seed,
            "data": data,
            "task": {**settings, "seed": seed},
            "trainer": tr,
        }
    )


def label_task_type(cfg: FitConfig) -> str:
    """A fine-tuning config's task type, ``"auto"`` resolved from the label declaration of its
    (first) store — what the run will monitor (``MONITOR[...]``) before any data is loaded."""
    task = cfg.task.task
    if task != "auto":
        return task
    from swiftlib.data.store import open_store

    path = cfg.data.store_paths[0]
    declared = open_store(path).labels
    if cfg.task.label not in declared:
        raise KeyError(
            f"label {cfg.task.label!r} is not declared in store {path}; valid labels: "
            f"{', '.join(sorted(declared)) or 'none'}"
        )
    return declared[cfg.task.label]["task"]
