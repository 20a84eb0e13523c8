"""``FMRIDataModule``: stores → splits → window datasets → DataLoaders, from one ``DataConfig``.

Batch arithmetic: ``batch_size`` is the **global** batch (what the optimiser sees per
step), ``batch_size = per_device_batch_size × num_devices × accumulate_grad_batches``;
the per-device size is derived and a non-divisible combination is an error naming the
numbers. Validation and test loaders run in eval mode: every window of every subject, in
order, so predictions can be averaged per subject.

Several stores (``store_path`` a list) are mixed for training with per-dataset weights
(:mod:`swiftlib.data.mixing`); each store is split on its own, by participant. One store or
several, the training loader resumes exactly mid-epoch (:mod:`swiftlib.data.loader`).

Training windows travel packed (``packed_windows``, :mod:`swiftlib.data.windows`): the
workers read and send only each window's brain voxels, and
:meth:`FMRIDataModule.on_after_batch_transfer` puts them on the grid once the batch reached
the model's device (on a GPU, after a host-to-device copy about four times smaller). The
model sees the same tensors as with dense windows.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader

from swiftlib.data.augment import AugmentConfig, build_augment, reseed_worker_augment
from swiftlib.utils.config import config_from_dict

__all__ = ["DataConfig", "FMRIDataModule"]

log = logging.getLogger(__name__)

try:  # Lightning is a core dependency; the fallback keeps `import swiftlib.data` working without it
    from lightning.pytorch import LightningDataModule
except ImportError:  # pragma: no cover
    LightningDataModule = object  # type: ignore[misc,assignment]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class DataConfig:
    """Everything the data side of a run needs.

    Attributes:
        store_path: a store directory, or several (mixed for training).
        label: label to predict (declared in the store); None for pretraining.
        sequence_length: frames per window.
        stride_between_seq: training window step, a fraction of the window duration.
        stride_within_seq: frame step inside a window.
        eval_stride_between_seq: window step for val/test (default: as training).
        windows_per_subject: training windows per subject per epoch (None = all windows).
        batch_size: global batch size (per device × devices × accumulation).
        num_devices: devices (GPUs/processes) over all nodes.
        accumulate_grad_batches: gradient-accumulation steps.
        eval_batch_size: per-device val/test batch (default: the per-device train batch).
        num_workers: DataLoader worker processes per device.
        pin_memory: pin host memory (useful on GPU).
        split_name: name of the split file under ``splits_dir/<dataset>/``.
        split_fractions: (train, val, test) fractions of participants.
        split_seed: seed of the split.
        stratify: stratify the split by ``label`` when it is a classification label.
        splits_dir: where split files live.
        few_shot_n: train on this many training participants (per store), None = all.
        few_shot_seed: seed of the few-shot subset (nested across n).
        dataset_weights: mixing weights: "balanced", "proportional", or {dataset: weight}.
        mix_num_samples: training draws per epoch when mixing (None = total windows).
        augment: augmentation settings (off by default).
        pairs: two windows of one subject per item (contrastive pretraining;
            :mod:`swiftlib.data.pairs`). ``fit`` sets it from the run's kind.
        pair_min_separation: frames between a pair's two starts (None = a window's span, no
            shared frame, as SwiFT v1; 0 = any start).
        eval_pairs_per_subject: fixed validation/test pairs per subject.
        verify_checksums: check the sha256 of every subject file the run reads against the
            store's manifest in :meth:`FMRIDataModule.setup`, before training (a hash per file
            version, cached; :mod:`swiftlib.data.store`). False: files are still checked when
            first opened, so a damaged one is refused mid-epoch instead of up front.
        packed_windows: training windows leave the workers packed and are scattered onto the
            grid on the model's device, by this DataModule's ``on_after_batch_transfer`` (the
            Trainer calls it when given ``datamodule=``). Not with augmentation or ``pairs``
            (they work on the grid: those windows are dense). Validation and test windows are
            dense (they are also run through loaders passed to the Trainer directly).
        dtype: dtype of the windows handed to the model.
        seed: seed of training shuffling and mixing.
    """

    store_path: str | tuple[str, ...] = "data/store"
    label: str | None = None
    sequence_length: int = 20
    stride_between_seq: float = 1.0
    stride_within_seq: int = 1
    eval_stride_between_seq: float | None = None
    windows_per_subject: int | None = None
    batch_size: int = 8
    num_devices: int = 1
    accumulate_grad_batches: int = 1
    eval_batch_size: int | None = None
    num_workers: int = 2
    pin_memory: bool = False
    split_name: str = "default"
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = 0
    stratify: bool = False
    splits_dir: str = "data/splits"
    few_shot_n: int | None = None
    few_shot_seed: int = 0
    dataset_weights: str | dict[str, float] = "balanced"
    mix_num_samples: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    pairs: bool = False
    pair_min_separation: int | None = None
    eval_pairs_per_subject: int = 4
    verify_checksums: bool = True
    packed_windows: bool = True
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    seed: int = 0

    def __post_init__(self):
        for name in (
            "batch_size",
            "num_devices",
            "accumulate_grad_batches",
            "sequence_length",
            "stride_within_seq",
        ):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"DataConfig.{name}={getattr(self, name)}: expected a positive integer"
                )
        if self.num_workers < 0:
            raise ValueError(f"DataConfig.num_workers={self.num_workers}: expected >= 0")
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise ValueError(
                f"DataConfig.eval_batch_size={self.eval_batch_size}: expected a positive integer"
            )
        if self.pair_min_separation is not None and self.pair_min_separation < 0:
            raise ValueError(
                f"DataConfig.pair_min_separation={self.pair_min_separation}: expected frames >= 0 "
                "or None"
            )
        if self.eval_pairs_per_subject < 1:
            raise ValueError(
                f"DataConfig.eval_pairs_per_subject={self.eval_pairs_per_subject}: expected a "
                "positive integer"
            )
        if self.few_shot_n is not None and self.few_shot_n < 1:
            raise ValueError(
                f"DataConfig.few_shot_n={self.few_shot_n}: expected a positive integer or None"
            )
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig.from_dict(self.augment)
        self.per_device_batch_size  # noqa: B018 - validates the batch arithmetic early
        if self.pairs and self.per_device_batch_size < 2:
            raise ValueError(
                f"DataConfig.batch_size={self.batch_size} gives {self.per_device_batch_size} "
                "pair(s) per device; contrastive pairs need at least 2 per device (the other pairs "
                "of a batch are the negatives)"
            )

    @property
    def per_device_batch_size(self) -> int:
        per_step = self.num_devices * self.accumulate_grad_batches
        if self.batch_size % per_step:
            raise ValueError(
                f"global batch_size {self.batch_size} is not divisible by num_devices "
                f"{self.num_devices} × accumulate_grad_batches {self.accumulate_grad_batches} = "
                f"{per_step}; choose a batch_size that is a multiple of {per_step} (e.g. "
                f"{per_step * max(1, self.batch_size // per_step)})"
            )
        return self.batch_size // per_step

    @property
    def store_paths(self) -> tuple[str, ...]:
        return (self.store_path,) if isinstance(self.store_path, str) else tuple(self.store_path)

    @classmethod
    def from_dict(cls, d) -> DataConfig:
        """Build from plain values (YAML/JSON/notebook parameters); unknown keys and wrong types
        fail."""
        return config_from_dict(cls, d)

    def to_dict(self) -> dict:
        from swiftlib.utils.config import config_to_dict

        return config_to_dict(self)


class FMRIDataModule(LightningDataModule):
    """Lightning DataModule over one or several stores (see the module docstring).

    After :meth:`setup`: ``stores``, ``splits`` ({store path: Splits}), ``train_dataset``,
    ``val_dataset``, ``test_dataset``, ``label_task`` and ``num_classes``.
    """

    def __init__(self, config: DataConfig | dict):
        super().__init__()
        self.config = DataConfig.from_dict(config) if isinstance(config, dict) else config
        if hasattr(self, "save_hyperparameters"):
            self.save_hyperparameters({"data": self.config.to_dict()})
        self.stores: list = []
        self.splits: dict = {}
        self.train_dataset = self.val_dataset = self.test_dataset = None
        self.label_task: str | None = None
        self.num_classes: int | None = None
        self._ready = False

    # -- setup -------------------------------------------------------------------------------
    def _check_trainer(self):
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return
        cfg = self.config
        if trainer.world_size != cfg.num_devices:
            raise ValueError(
                f"the Trainer runs on {trainer.world_size} device(s) but DataConfig.num_devices is "
                f"{cfg.num_devices}; set num_devices to the Trainer's devices × nodes so the "
                f"global batch_size {cfg.batch_size} is split correctly"
            )
        if trainer.accumulate_grad_batches != cfg.accumulate_grad_batches:
            raise ValueError(
                f"the Trainer accumulates {trainer.accumulate_grad_batches} batch(es) but "
                f"DataConfig.accumulate_grad_batches is {cfg.accumulate_grad_batches}; make them "
                "equal"
            )

    def setup(self, stage: str | None = None) -> None:
        from swiftlib.data.mixing import MixedWindowDataset, check_mixable
        from swiftlib.data.splits import (
            check_leakage,
            few_shot_subset,
            load_or_create_splits,
            subjects_of,
        )
        from swiftlib.data.store import open_store
        from swiftlib.data.windows import WindowDataset

        self._check_trainer()
        if self._ready:
            return
        cfg = self.config
        dtype = _DTYPES[cfg.dtype]
        augment = build_augment(cfg.augment)
        eval_stride = (
            cfg.eval_stride_between_seq
            if cfg.eval_stride_between_seq is not None
            else cfg.stride_between_seq
        )
        train, val, test = {}, [], []
        first_store_of: dict[str, str] = {}  # dataset name -> store path
        stores = [open_store(path) for path in cfg.store_paths]
        check_mixable(stores)  # one grid, layout, template and normalisation for the whole run
        for path, store in zip(cfg.store_paths, stores, strict=True):
            self.stores.append(store)
            dataset_name = "+".join(store.datasets) or "custom"
            if dataset_name in first_store_of:
                # the training mix and the split files are keyed by dataset name: a second store
                # of the same name would silently replace the first one in training
                raise ValueError(
                    f"stores {first_store_of[dataset_name]} and {path} both hold dataset "
                    f"{dataset_name!r}; each store in store_path must hold a different dataset "
                    "(write one store per cohort, or preprocess both into one store)"
                )
            first_store_of[dataset_name] = str(path)
            spec = store.labels.get(cfg.label) if cfg.label is not None else None
            if cfg.label is not None and spec is None:
                raise KeyError(
                    f"label {cfg.label!r} is not declared in store {path}; valid labels: "
                    f"{sorted(store.labels)}"
                )
            table = store.subjects.drop_duplicates("participant_id")
            participants = table["participant_id"].astype(str).tolist()
            stratify = None
            if cfg.stratify and spec is not None and spec["task"] == "classification":
                stratify = table[cfg.label].tolist()
            splits = load_or_create_splits(
                participants,
                dataset_name,
                cfg.split_name,
                cfg.split_fractions,
                cfg.split_seed,
                stratify=stratify,
                stratify_label=cfg.label if stratify is not None else None,
                splits_dir=cfg.splits_dir,
            )
            check_leakage(splits)
            self.splits[str(path)] = splits
            train_participants = splits.train
            if cfg.few_shot_n is not None:
                train_participants = few_shot_subset(
                    splits.train, cfg.few_shot_n, cfg.few_shot_seed
                )
            common = dict(
                sequence_length=cfg.sequence_length,
                stride_within_seq=cfg.stride_within_seq,
                label=cfg.label,
                dtype=dtype,
            )
            train[dataset_name] = WindowDataset(
                store,
                subjects_of(store, train_participants),
                stride_between_seq=cfg.stride_between_seq,
                mode="train",
                windows_per_subject=cfg.windows_per_subject,
                augment=augment,
                packed=self.packs_training_windows,
                **common,
            )
            val.append(
                WindowDataset(
                    store,
                    subjects_of(store, splits.val),
                    stride_between_seq=eval_stride,
                    mode="eval",
                    **common,
                )
            )
            test.append(
                WindowDataset(
                    store,
                    subjects_of(store, splits.test),
                    stride_between_seq=eval_stride,
                    mode="eval",
                    **common,
                )
            )
            if cfg.verify_checksums:  # a damaged file is refused before training, not mid-epoch
                used = [*train[dataset_name].subject_ids, *val[-1].subject_ids]
                store.verify_subjects([*used, *test[-1].subject_ids])
            if spec is not None:
                if self.label_task is not None and (self.label_task, self.num_classes) != (
                    spec["task"],
                    spec.get("num_classes"),
                ):
                    raise ValueError(
                        f"label {cfg.label!r} is {spec['task']} in {path} but {self.label_task} in "
                        "an earlier store"
                    )
                self.label_task, self.num_classes = spec["task"], spec.get("num_classes")
        if len(train) == 1:
            self.train_dataset = next(iter(train.values()))
        else:
            self.train_dataset = MixedWindowDataset(train)
        self.val_dataset = val[0] if len(val) == 1 else ConcatDataset(val)
        self.test_dataset = test[0] if len(test) == 1 else ConcatDataset(test)
        if cfg.pairs:  # contrastive pretraining: two windows of one subject per item
            from swiftlib.data.pairs import PairDataset

            kw = dict(
                min_separation=cfg.pair_min_separation,
                pairs_per_subject=cfg.eval_pairs_per_subject,
                seed=cfg.seed,
            )
            self.train_dataset = PairDataset(self.train_dataset, **kw)
            self.val_dataset = PairDataset(self.val_dataset, **kw)
            self.test_dataset = PairDataset(self.test_dataset, **kw)
            if self.val_dataset.num_subjects < 2:
                raise ValueError(
                    "contrastive validation needs pairs of at least 2 subjects (a window must pick "
                    "its partner out of other subjects' windows); the validation split has "
                    f"{self.val_dataset.num_subjects}. Raise split_fractions[1] (now "
                    f"{cfg.split_fractions[1]}) or add subjects"
                )
        self._ready = True
        log.info(
            "data: train %d, val %d, test %d windows (per-device batch %d)",
            len(self.train_dataset),
            len(self.val_dataset),
            len(self.test_dataset),
            cfg.per_device_batch_size,
        )

    @property
    def packs_training_windows(self) -> bool:
        """Whether training batches leave the workers packed (``DataConfig.packed_windows``,
        without augmentation and contrastive pairs)."""
        cfg = self.config
        return cfg.packed_windows and not cfg.pairs and build_augment(cfg.augment) is None

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Packed windows onto the grid, on the batch's device (``DataConfig.dtype``)."""
        from swiftlib.data.windows import unpack_batch

        batch = unpack_batch(batch, _DTYPES[self.config.dtype])
        trainer = getattr(self, "trainer", None)
        if trainer is not None:  # e.g. DeepSpeed bf16: the grid in the weights' dtype, as the
            # precision plugin would have cast a dense batch (it saw the packed one)
            batch = trainer.precision_plugin.convert_input(batch)
        return batch

    # -- loaders -----------------------------------------------------------------------------
    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _loader(
        self, dataset, batch_size: int, sampler, cls=DataLoader, drop_last: bool = False
    ) -> DataLoader:
        cfg = self.config
        workers = cfg.num_workers
        from swiftlib.data.pairs import collate_pairs
        from swiftlib.data.windows import collate_samples

        return cls(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            collate_fn=collate_pairs if cfg.pairs else collate_samples,
            pin_memory=cfg.pin_memory,
            persistent_workers=workers > 0,
            worker_init_fn=reseed_worker_augment if workers > 0 else None,
            # a private generator: creating an iterator never draws from the global RNG,
            # so dropout/drop-path streams are the same in a resumed run
            generator=torch.Generator().manual_seed(cfg.seed),
            drop_last=drop_last,
        )

    def _require_setup(self):
        if not self._ready:
            raise RuntimeError("FMRIDataModule: call setup() first (the Trainer does this for you)")

    def _train_sampler(self):
        from swiftlib.data.loader import EpochShuffleSampler
        from swiftlib.data.mixing import MixedWindowDataset, MixingSampler
        from swiftlib.data.pairs import EpochKeyedSampler

        cfg = self.config
        world, rank = self._rank()
        windows = self.train_dataset.dataset if cfg.pairs else self.train_dataset
        if isinstance(windows, MixedWindowDataset):
            sampler = MixingSampler(
                windows,
                weights=cfg.dataset_weights,
                num_samples=cfg.mix_num_samples,
                seed=cfg.seed,
                num_replicas=world,
                rank=rank,
            )
        else:
            sampler = EpochShuffleSampler(
                len(windows), seed=cfg.seed, num_replicas=world, rank=rank
            )
        # pairs: the epoch travels with each index, so the pair drawn is the same after a resume
        return EpochKeyedSampler(sampler) if cfg.pairs else sampler

    @property
    def num_train_samples(self) -> int:
        """Training samples per epoch over all ranks: the windows of one store, or the
        mixing draws of several (``mix_num_samples``, default the total window count)."""
        self._require_setup()
        if len(self.stores) > 1 and self.config.mix_num_samples is not None:
            return int(self.config.mix_num_samples)
        return len(self.train_dataset)

    def train_dataloader(self) -> DataLoader:
        """An epoch-seeded sampler sharded over ranks — a shuffle of one store's windows or the
        weighted mix of several stores — in a loader that resumes mid-epoch
        (:class:`~swiftlib.data.loader.ResumableLoader`): a run continued from a mid-epoch
        ``last.ckpt`` takes the same batches in the same order as an uninterrupted one."""
        from swiftlib.data.loader import ResumableLoader

        self._require_setup()
        batch, sampler = self.config.per_device_batch_size, self._train_sampler()
        if self.config.pairs and len(sampler) < batch:
            raise ValueError(
                f"{len(sampler)} training pair(s) per device, fewer than the per-device batch "
                f"{batch}; contrastive batches are never partial (the other pairs of a batch are "
                "its negatives): lower batch_size or add subjects"
            )
        # contrastive: no partial last batch (a batch of one pair has no negative)
        return self._loader(
            self.train_dataset, batch, sampler, cls=ResumableLoader, drop_last=self.config.pairs
        )

    def _eval_batch(self) -> int:
        return self.config.eval_batch_size or self.config.per_device_batch_size

    def _eval_loader(self, dataset) -> DataLoader:
        """Every window exactly once over all ranks (rank r takes windows r, r+W, …; no
        padding), in order; the task gathers and averages per subject. Pairs: rank r takes the
        r-th contiguous block, in which consecutive pairs are of different subjects."""
        world, rank = self._rank()
        indices = list(range(rank, len(dataset), world))
        # contiguous blocks: a rank's batches keep the pairs' alternation of subjects
        if self.config.pairs:
            indices = [int(i) for i in np.array_split(np.arange(len(dataset)), world)[rank]]
        return self._loader(dataset, self._eval_batch(), indices)

    def val_dataloader(self) -> DataLoader:
        self._require_setup()
        return self._eval_loader(self.val_dataset)

    def test_dataloader(self) -> DataLoader:
        self._require_setup()
        return self._eval_loader(self.test_dataset)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def contract(self) -> dict:
        """The input contract of the run's data, saved with checkpoints: the store's, or for
        several stores their shared one with the TR range spanning them all."""
        from swiftlib.data.mixing import mixed_contract

        self._require_setup()
        return mixed_contract(self.stores)

    def state_dict(self) -> dict:
        return {"config": asdict(self.config)}
