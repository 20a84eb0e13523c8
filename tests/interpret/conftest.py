"""A tiny synthetic cohort with a strong planted ``age`` signal and a model trained on it
(once per session), shared by the interpretation tests."""

from __future__ import annotations

import pytest

# 8 mm, distinct axes (20, 24, 28) divisible by the *_test presets' rule; the age region's
# amplitude effect is made strong (gain, signal, low noise, wider regions) so a model
# trained for seconds learns it and the fast-tier recovery check means something.
INTERP_KW = dict(
    num_subjects=24,
    seed=5,
    voxel_size=8.0,
    grid=(20, 24, 28),
    num_frames=24,
    tr=1.0,
    age_gain=1.5,
    signal_pct=8.0,
    noise_pct=0.5,
    region_sigma_mm=12.0,
)
FAST_EPOCHS = 20
FAST_LR = 3e-3


@pytest.fixture(scope="session")
def interp_store(tmp_path_factory):
    from swiftlib.data.synthetic import SyntheticConfig, make_synthetic_cohort

    root = tmp_path_factory.mktemp("interp")
    return make_synthetic_cohort(
        root / "store", config=SyntheticConfig(**INTERP_KW), progress=False
    )


def age_fit_config(store, run_dir, epochs=FAST_EPOCHS, lr=FAST_LR, label="age") -> dict:
    task = "regression" if label == "age" else "classification"
    return {
        "kind": "finetune",
        "run_dir": str(run_dir),
        "seed": 0,
        "data": {
            "store_path": str(store.root),
            "sequence_length": 8,
            "batch_size": 4,
            "num_workers": 0,
            "splits_dir": str(run_dir.parent / "splits"),
        },
        "task": {"model": "swift_v2_test", "label": label, "task": task, "optim": {"lr": lr}},
        "trainer": {"max_epochs": epochs, "enable_progress_bar": False, "accelerator": "cpu"},
    }


@pytest.fixture(scope="session")
def age_run(interp_store, tmp_path_factory):
    """A fine-tuned ``age`` model (RunResult) on ``interp_store``."""
    from swiftlib.training import fit

    return fit(age_fit_config(interp_store, tmp_path_factory.mktemp("age_run") / "run"))


@pytest.fixture(scope="session")
def pretrain_ckpt(interp_store, tmp_path_factory):
    """A SimMIM checkpoint (no head) after two steps."""
    from swiftlib.training import fit

    run = tmp_path_factory.mktemp("pre_run") / "run"
    cfg = age_fit_config(interp_store, run)
    cfg.update(
        kind="pretrain",
        task={"model": "swift_v2_test"},
        trainer={
            "max_steps": 2,
            "max_epochs": 1,
            "enable_progress_bar": False,
            "accelerator": "cpu",
        },
    )
    return fit(cfg).last_checkpoint
