"""DataConfig validation, batch arithmetic and FMRIDataModule loaders."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from swiftlib.data.augment import AugmentConfig, FrameAugment
from swiftlib.data.datamodule import DataConfig, FMRIDataModule
from swiftlib.data.mixing import MixedWindowDataset, MixingSampler
from swiftlib.data.splits import check_leakage
from swiftlib.data.windows import Batch
from swiftlib.utils.config import ConfigError


def test_from_dict_rejects_unknown_and_wrong_types():
    with pytest.raises(ConfigError) as e:
        DataConfig.from_dict({"batchsize": 8})
    assert "did you mean 'batch_size'" in str(e.value) and "valid keys:" in str(e.value)
    assert "sequence_length" in str(e.value)
    with pytest.raises(
        ConfigError, match=r"DataConfig.sequence_length='20' \(str\): expected an integer"
    ):
        DataConfig.from_dict({"sequence_length": "20"})
    with pytest.raises(ConfigError, match="expected one of"):
        DataConfig.from_dict({"dtype": "float64"})
    with pytest.raises(
        ConfigError,
        match=r"DataConfig.augment: unknown key\(s\) .strenght. \(did you mean .strength.\?\)",
    ):
        DataConfig.from_dict({"augment": {"strenght": 2}})
    cfg = DataConfig.from_dict(
        {
            "store_path": ["a", "b"],
            "split_fractions": [0.8, 0.1, 0.1],
            "augment": {"enabled": True},
            "stride_between_seq": 1,
            "dataset_weights": {"a": 1, "b": 2},
        }
    )
    assert cfg.store_paths == ("a", "b") and cfg.split_fractions == (0.8, 0.1, 0.1)
    assert cfg.augment == AugmentConfig(enabled=True) and cfg.dataset_weights == {
        "a": 1.0,
        "b": 2.0,
    }
    assert DataConfig.from_dict(cfg.to_dict()) == cfg
    assert DataConfig(augment={"enabled": True}).augment.enabled  # dict accepted directly too


def test_batch_arithmetic():
    assert (
        DataConfig(batch_size=16, num_devices=2, accumulate_grad_batches=2).per_device_batch_size
        == 4
    )
    assert DataConfig(batch_size=3).per_device_batch_size == 3
    with pytest.raises(ValueError) as e:
        DataConfig(batch_size=10, num_devices=2, accumulate_grad_batches=2)
    msg = str(e.value)
    assert (
        "batch_size 10" in msg and "num_devices 2" in msg and "accumulate_grad_batches 2 = 4" in msg
    )


@pytest.mark.parametrize(
    "kw, fragment",
    [
        ({"batch_size": 0}, "batch_size=0"),
        ({"num_workers": -1}, "num_workers=-1"),
        ({"eval_batch_size": 0}, "eval_batch_size=0"),
        ({"few_shot_n": 0}, "few_shot_n=0"),
    ],
)
def test_config_value_errors(kw, fragment):
    with pytest.raises(ValueError, match=fragment):
        DataConfig(**kw)


def _cfg(store, tmp_path, **kw):
    base = dict(
        store_path=str(store.root),
        sequence_length=20,
        stride_between_seq=0.5,
        batch_size=2,
        num_workers=0,
        splits_dir=str(tmp_path / "splits"),
        split_fractions=(0.6, 0.2, 0.2),
    )
    base.update(kw)
    return DataConfig.from_dict(base)


def test_setup_splits_and_loaders(small_store, tmp_path):
    store, _ = small_store
    dm = FMRIDataModule(_cfg(store, tmp_path, label="sex", stratify=True))
    with pytest.raises(RuntimeError, match="call setup"):
        dm.train_dataloader()
    dm.setup("fit")
    assert dm.label_task == "classification" and dm.num_classes == 2
    split_file = tmp_path / "splits" / "synthetic" / "default.json"
    saved = json.loads(split_file.read_text())
    assert saved["params"]["stratify_label"] == "sex"
    splits = dm.splits[str(store.root)]
    check_leakage(splits)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (7, 2, 2)  # 11 participants
    # both sessions of participant sub-0010 are in the same split
    for ds in (dm.train_dataset, dm.val_dataset, dm.test_dataset):
        has = {"sub-0010" in ds.subject_ids, "sub-0010_ses-2" in ds.subject_ids}
        assert len(has) == 1
    used = (
        set(dm.train_dataset.subject_ids)
        | set(dm.val_dataset.subject_ids)
        | set(dm.test_dataset.subject_ids)
    )
    assert used == set(store.subject_ids)
    assert (
        dm.val_dataset.mode == dm.test_dataset.mode == "eval" and dm.train_dataset.mode == "train"
    )
    val = dm.val_dataloader()
    assert val.batch_size == 2 and val.persistent_workers is False
    seen = [
        (sid, int(st)) for b in val for sid, st in zip(b.subject_id, b.window_start, strict=True)
    ]
    # every window, in order
    assert seen == list(dm.val_dataset.index.itertuples(index=False, name=None))
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)  # packed → grid
    assert (
        isinstance(batch, Batch)
        and batch.x.shape == (2, 1, 20, 24, 22, 20)
        and batch.y.dtype == torch.long
    )
    assert dm.contract()["grid"] == [20, 24, 22]
    dm.setup("test")  # idempotent
    again = FMRIDataModule(_cfg(store, tmp_path, label="sex", stratify=True))
    again.setup()
    assert again.splits[str(store.root)].as_dict() == splits.as_dict()  # split file reused


def test_few_shot_augment_and_workers(small_store, tmp_path):
    store, _ = small_store
    cfg = _cfg(
        store,
        tmp_path,
        label="age",
        few_shot_n=3,
        num_workers=2,
        eval_batch_size=4,
        augment={"enabled": True, "elastic_prob": 0.0},
        split_name="fewshot",
    )
    dm = FMRIDataModule(cfg)
    dm.setup()
    assert isinstance(dm.train_dataset.augment, FrameAugment) and dm.val_dataset.augment is None
    participants = set(store.subjects.loc[dm.train_dataset.subject_ids, "participant_id"])
    assert len(participants) <= 3 and participants <= set(dm.splits[str(store.root)].train)
    train = dm.train_dataloader()
    assert (
        train.persistent_workers and train.num_workers == 2 and dm.test_dataloader().batch_size == 4
    )
    batches = list(train)
    assert sum(len(b.subject_id) for b in batches) == len(dm.train_dataset)
    assert all(b.y.dtype == torch.float32 for b in batches)


def test_unknown_label(small_store, tmp_path):
    store, _ = small_store
    with pytest.raises(KeyError, match=r"label 'iq' is not declared.*\['age', 'sex'\]"):
        FMRIDataModule(_cfg(store, tmp_path, label="iq")).setup()


def test_trainer_mismatch(small_store, tmp_path):
    store, _ = small_store
    dm = FMRIDataModule(_cfg(store, tmp_path))
    dm.trainer = SimpleNamespace(world_size=2, accumulate_grad_batches=1, global_rank=0)
    with pytest.raises(ValueError, match="Trainer runs on 2 device.*num_devices is 1"):
        dm.setup()
    dm.trainer = SimpleNamespace(world_size=1, accumulate_grad_batches=4, global_rank=0)
    with pytest.raises(ValueError, match="accumulates 4 batch.*accumulate_grad_batches is 1"):
        dm.setup()


def test_two_stores_are_mixed(small_store, other_store, tmp_path):
    cfg = _cfg(
        small_store[0],
        tmp_path,
        store_path=[str(small_store[0].root), str(other_store[0].root)],
        mix_num_samples=10,
        split_fractions=(0.5, 0.25, 0.25),
    )
    dm = FMRIDataModule(cfg)
    dm.setup()
    assert isinstance(dm.train_dataset, MixedWindowDataset) and dm.train_dataset.names == [
        "synthetic",
        "other",
    ]
    assert (tmp_path / "splits" / "other" / "default.json").exists()
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, MixingSampler) and len(loader.sampler) == 10
    dm.trainer = SimpleNamespace(world_size=1, accumulate_grad_batches=1, global_rank=0)
    assert len(dm.train_dataloader().sampler) == 10
    assert len(dm.val_dataset) == sum(len(d) for d in dm.val_dataset.datasets)


def test_a_damaged_subject_file_is_refused_at_setup(tmp_path):
    """64 flipped bytes in one subject file: refused before training, naming the subject."""
    from swiftlib.data.store import CorruptSubjectError
    from tests.data.conftest import build_store

    store, _ = build_store(tmp_path / "store", frames=[30, 31, 33, 35, 36], second_session=False)
    p = store.path("sub-0003")
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = bytes(b ^ 0xFF for b in raw[len(raw) // 2 :][:64])
    p.write_bytes(bytes(raw))
    cfg = _cfg(store, tmp_path, label="sex")
    with pytest.raises(CorruptSubjectError, match=rf"subject sub-0003: file {p}"):
        FMRIDataModule(cfg).setup()
    # opting out of the up-front check still refuses the file when it is first read
    dm = FMRIDataModule({**cfg.to_dict(), "verify_checksums": False})
    dm.setup()
    with pytest.raises(CorruptSubjectError, match="sub-0003"):
        for ds in (dm.train_dataset, dm.val_dataset, dm.test_dataset):
            for i in range(len(ds)):
                ds[i]


def test_workers_do_not_hash_again_what_setup_verified(tmp_path, monkeypatch):
    from swiftlib.data import integrity
    from tests.data.conftest import build_store

    store, _ = build_store(tmp_path / "store", frames=[30, 31, 33, 35, 36], second_session=False)
    dm = FMRIDataModule(_cfg(store, tmp_path, label="sex", num_workers=1))
    dm.setup()

    def no_hash(path):
        raise AssertionError(f"{path} hashed a second time")

    monkeypatch.setattr(integrity, "sha256_file", no_hash)
    monkeypatch.setattr(integrity, "_HASHES", {})  # only what the store object carries
    assert sum(len(b.subject_id) for b in dm.train_dataloader()) == len(dm.train_dataset)


def test_the_trainer_unpacks_training_windows_on_the_device(tmp_path):
    """Lightning calls the DataModule's on_after_batch_transfer: the model's training_step sees
    dense windows equal to the dense path's; augmentation and pairs keep dense windows."""
    import lightning.pytorch as pl

    from swiftlib.data.windows import PackedBatch, WindowDataset
    from tests.data.conftest import build_store

    store, _ = build_store(tmp_path / "store", frames=[30, 31, 33, 35, 36], second_session=False)
    dm = FMRIDataModule(_cfg(store, tmp_path, label="sex", num_workers=1))
    dm.setup()
    assert dm.train_dataset.packed and not dm.val_dataset.packed
    assert isinstance(next(iter(dm.train_dataloader())).x, PackedBatch)
    dense = WindowDataset(
        store, dm.train_dataset.subject_ids, sequence_length=20, label="sex", mode="train"
    )
    seen = []

    class Probe(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def training_step(self, batch, batch_idx):
            for x, sid, start in zip(batch.x, batch.subject_id, batch.window_start, strict=True):
                i = dense.subject_ids.index(sid)
                seen.append(torch.equal(x, dense.read(i, int(start)).x))
            return (self.w * batch.x.mean()) ** 2

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = pl.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(Probe(), datamodule=dm)
    assert seen and all(seen) and len(seen) == 6
    augmented = _cfg(store, tmp_path, label="sex", augment={"enabled": True})
    assert not FMRIDataModule(augmented).packs_training_windows
    assert not FMRIDataModule(
        {**_cfg(store, tmp_path).to_dict(), "pairs": True}
    ).packs_training_windows
    assert not FMRIDataModule(
        {**_cfg(store, tmp_path).to_dict(), "packed_windows": False}
    ).packs_training_windows
