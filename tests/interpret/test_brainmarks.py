"""The brainmarks adapter: the suite's ``mni`` sample → swiftlib input (voxel order, SwiFT v1
and mni_ras layouts against independent references, TR), the wrapper's embeddings against
the embedding adapter, and discovery by a stand-in for the suite's registry (the suite itself
is not installed)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

import swiftlib
from swiftlib.interpret.brainmarks import (
    MNI152_2MM_AFFINE,
    MNI152_2MM_SHAPE,
    SwiftlibTransform,
    SwiftlibWrapper,
    create_swiftlib_model,
    load_suite_mask,
    resample_tr,
    unmask,
)
from swiftlib.interpret.embeddings import EmbeddingAdapter
from swiftlib.tasks.common import SWIFT_V1_CONTRACT, ContractError

REPO = Path(swiftlib.__file__).resolve().parents[1]


def _mask(radii=(30, 36, 30), centre=(45, 56, 40)) -> np.ndarray:
    """An ellipsoid 'brain' on the suite's 91 × 109 × 91 RAS grid (X, Y, Z)."""
    ijk = np.indices(MNI152_2MM_SHAPE).astype(float)  # (3, X, Y, Z)
    r2 = sum(((ijk[a] - centre[a]) / radii[a]) ** 2 for a in range(3))
    return r2 <= 1.0


def _sample(mask: np.ndarray, num_frames: int, tr: float = 0.8, seed: int = 0) -> dict:
    """A suite sample: raw BOLD with a spatial gradient, voxel-wise z-scored + mean/std."""
    rng = np.random.default_rng(seed)
    V = int(mask.sum())
    base = 1000.0 + 200.0 * rng.random((1, V))  # (1, V)
    raw = base + 20.0 * rng.standard_normal((num_frames, V))  # (T, V)
    mean, std = raw.mean(0, keepdims=True), raw.std(0, keepdims=True)
    return {
        "bold": torch.from_numpy(((raw - mean) / std).astype(np.float32)),
        "mean": torch.from_numpy(mean.astype(np.float32)),
        "std": torch.from_numpy(std.astype(np.float32)),
        "tr": tr,
    }, raw


def _ras_volume(raw: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``raw (T, V)`` → ``(X, Y, Z, T)``: voxel ``j`` is the suite's ``j``-th brain voxel in
    C order of ``(Z, Y, X)`` (written with ``argwhere``, apart from :func:`unmask`)."""
    zyx = np.argwhere(mask.T)  # (V, 3) in C order of (Z, Y, X)
    vol = np.zeros((*mask.shape, raw.shape[0]), np.float32)
    vol[zyx[:, 2], zyx[:, 1], zyx[:, 0]] = raw.T
    return vol


@pytest.fixture(scope="module")
def mask() -> np.ndarray:
    return _mask()


@pytest.fixture(scope="module")
def mask_path(mask, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bm") / "mask.nii.gz"
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), MNI152_2MM_AFFINE), path)
    return path


def test_unmask_puts_voxel_j_where_the_suite_reads_it(mask):
    bold = np.arange(3 * mask.sum(), dtype=np.float32).reshape(3, -1)  # (T, V)
    vol = unmask(bold, mask)  # (X, Y, Z, T)
    assert vol.shape == (*MNI152_2MM_SHAPE, 3)
    zyx = np.argwhere(mask.T)  # the suite: data (T, Z, Y, X)[:, mask_zyx], C order
    for j in (0, 1, 777, len(zyx) - 1):
        z, y, x = zyx[j]
        np.testing.assert_array_equal(vol[x, y, z], bold[:, j])
    assert vol[~mask].max() == 0
    with pytest.raises(ValueError, match=r"expected \(T, \d+\)"):
        unmask(bold[:, :-1], mask)


def test_mask_from_a_las_file_is_reoriented(mask, tmp_path):
    las = nib.as_closest_canonical(nib.Nifti1Image(mask.astype(np.uint8), MNI152_2MM_AFFINE))
    flip = las.as_reoriented(np.array([[0, -1], [1, 1], [2, 1]]))  # x mirrored: LAS voxels
    assert nib.aff2axcodes(flip.affine) == ("L", "A", "S")
    nib.save(flip, tmp_path / "las.nii.gz")
    np.testing.assert_array_equal(load_suite_mask(tmp_path / "las.nii.gz"), mask)
    nib.save(nib.Nifti1Image(mask[:90].astype(np.uint8), MNI152_2MM_AFFINE), tmp_path / "b.nii")
    with pytest.raises(ValueError, match="expected the suite's MNI152NLin6Asym 2 mm grid"):
        load_suite_mask(tmp_path / "b.nii")
    with pytest.raises(FileNotFoundError, match="mask_path="):
        load_suite_mask(tmp_path / "missing.nii.gz")


def test_swift_v1_layout_equals_swift_v1_input(mask):
    """LAS (x mirrored), x pad 3|2, y crop 7|6, z pad 3|2, v1's global z-score over non-zero
    values (float32, unbiased std), background = in-brain minimum, fp16: written here from
    SwiFT v1's preprocessing independently of swiftlib's code."""
    contract = {**SWIFT_V1_CONTRACT, "space": "MNI152", "tr_range": [0.72, 0.8]}
    tf = SwiftlibTransform(contract, sequence_length=4, max_windows=2, mask=mask)
    sample, _ = _sample(mask, num_frames=10)
    out = tf(sample)["bold"]
    assert out.shape == (1, 96, 96, 96, 8)  # 2 windows of 4 frames; frames 8, 9 dropped

    raw = (sample["bold"] * sample["std"] + sample["mean"]).numpy()  # the suite's float32 raw
    ras = _ras_volume(raw[:8], mask)  # (X, Y, Z, T)
    las = torch.from_numpy(ras[::-1].copy())
    vol = torch.nn.functional.pad(las.permute(3, 0, 1, 2), (3, 2, -7, -6, 3, 2))  # (T, 96³)
    vol = vol.permute(1, 2, 3, 0)  # (X, Y, Z, T)
    values = vol[vol != 0]
    z = (vol - values.mean()) / values.std()
    z[vol == 0] = ((values - values.mean()) / values.std()).min()
    want = z.half().float()
    assert torch.equal(out[0], want)  # bit for bit


def test_mni_ras_layout_equals_nilearn_on_the_store_grid(mask):
    """The default layout at 2 mm: the store grid (brain-centred box on the 2 mm lattice)
    read with nilearn nearest-neighbour resampling, then swiftlib's z-score (float64 stats,
    population std) over the brain, background = in-brain minimum."""
    from nilearn.image import resample_img

    from swiftlib.data.geometry import store_affine

    grid = (96, 96, 96)
    contract = {
        "grid": list(grid),
        "voxel_size": 2.0,
        "space": "MNI152",
        "layout": "mni_ras",
        "normalisation": "zscore_global",
        "template": "MNI152NLin6Asym",
        "tr_range": [1.0, 1.0],
    }
    tf = SwiftlibTransform(contract, sequence_length=3, max_windows=2, mask=mask)
    sample, raw = _sample(mask, num_frames=7, tr=1.05)  # within 10 %: kept as it is
    out = tf(sample)["bold"][0].numpy()  # (D, H, W, 6)

    ras = _ras_volume(raw[:6], mask)
    img = resample_img(
        nib.Nifti1Image(ras, MNI152_2MM_AFFINE),
        target_affine=store_affine(grid, 2.0),
        target_shape=grid,
        interpolation="nearest",
        force_resample=True,
        copy_header=True,
    )
    vol = np.asarray(img.dataobj, np.float64)
    brain = np.any(vol != 0, axis=3)
    assert brain.sum() == mask.sum()  # the whole ellipsoid lies inside the store box
    values = vol[brain]
    want = np.full(vol.shape, ((values - values.mean()) / values.std()).min())
    want[brain] = (values - values.mean()) / values.std()
    np.testing.assert_allclose(out, want.astype(np.float16).astype(np.float32), atol=2e-3)


def test_tr_outside_the_contract_is_resampled_or_refused(mask):
    contract = {
        "grid": [20, 24, 28],
        "voxel_size": 8.0,
        "layout": "mni_ras",
        "normalisation": "zscore_global",
        "tr_range": [0.72, 0.8],
    }
    tf = SwiftlibTransform(contract, sequence_length=8, max_windows=8, mask=mask)
    assert tf.effective_tr(0.75) == 0.75 and tf.effective_tr(0.86) == 0.86  # inside + 10 %
    assert tf.effective_tr(2.0) == pytest.approx(0.76)
    sample, _ = _sample(mask, num_frames=12, tr=2.0)  # 22 s -> 29 frames at 0.76 s
    assert tf(sample)["bold"].shape == (1, 20, 24, 28, 24)  # 3 windows of 8
    strict = SwiftlibTransform(contract, sequence_length=8, mask=mask, target_tr=None)
    with pytest.raises(ContractError, match=r"TR 2 s; .* TR 0.72–0.8 s .*target_tr='auto'"):
        strict(sample)
    # the store's temporal resampling (swiftlib preprocess --target-tr), voxel by voxel
    from swiftlib.data.temporal import resample_time

    t = np.linspace(0.0, 1.0, 12, dtype=np.float32)[:, None] * np.arange(1, 4)  # (T, V)
    res = resample_tr(t, 2.0, 0.76)
    assert res.shape == (29, 3)
    np.testing.assert_array_equal(res, resample_time(t.T.copy(), 2.0, 0.76)[0].T)
    np.testing.assert_allclose(res[:, 0], np.arange(29) * 0.76 / 22.0, atol=0.02)  # a ramp


def test_bad_input_names_the_value(mask):
    contract = {"grid": [20, 24, 28], "voxel_size": 8.0, "layout": "mni_ras"}
    with pytest.raises(ContractError, match="expected the checkpoint's normalisation contract"):
        SwiftlibTransform({}, sequence_length=8, mask=mask)
    with pytest.raises(ValueError, match="max_windows=0"):
        SwiftlibTransform(contract, sequence_length=8, max_windows=0, mask=mask)
    with pytest.raises(ValueError, match="target_tr=-1"):
        SwiftlibTransform(contract, sequence_length=8, mask=mask, target_tr=-1)
    with pytest.raises(ValueError, match=r"mask: shape \(91, 109, 90\)"):
        SwiftlibTransform(contract, sequence_length=8, mask=mask[..., :90])
    tf = SwiftlibTransform(contract, sequence_length=8, mask=mask)
    with pytest.raises(KeyError, match="no 'tr'"):
        tf({"bold": torch.zeros(3, int(mask.sum()))})
    with pytest.raises(ValueError, match="ckpt_path is required"):
        create_swiftlib_model(None)


def test_wrapper_embeddings_are_the_adapters_window_mean(pretrain_ckpt, mask_path):
    transform, model = create_swiftlib_model(pretrain_ckpt, mask_path=mask_path, max_windows=2)
    assert model.__space__ == "mni" and transform.sequence_length == 8
    samples = [_sample(load_suite_mask(mask_path), 20, tr=1.0, seed=s)[0] for s in (0, 1)]
    batch = default_collate([transform(s) for s in samples])
    assert batch["bold"].shape == (2, 1, 20, 24, 28, 16)  # 2 windows of 8 frames
    cls, reg, patch = model(batch)
    F = model.num_features
    assert cls.shape == (2, 1, F) and reg is None and patch.shape[::2] == (2, F)

    adapter = EmbeddingAdapter.from_checkpoint(pretrain_ckpt, device="cpu")
    windows = batch["bold"].reshape(2, 1, 20, 24, 28, 2, 8).permute(0, 5, 1, 2, 3, 4, 6)
    per_window = adapter.embed(windows.reshape(4, 1, 20, 24, 28, 8)).reshape(2, 2, F)
    torch.testing.assert_close(cls[:, 0], per_window.mean(1), atol=1e-5, rtol=1e-5)
    # the pooled embedding is the mean of the normed tokens, window by window
    torch.testing.assert_close(patch.mean(1), cls[:, 0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(cls[0], cls[1])
    with pytest.raises(ValueError, match=r"expected \(B, 1, D, H, W, nW \* 8\)"):
        model({"bold": batch["bold"][..., :12]})


_FAKE_BASE = """
    from typing import Callable, Iterable, NamedTuple
    import torch.nn as nn
    from torch import Tensor

    class Embeddings(NamedTuple):
        cls_embeds: Tensor | None
        reg_embeds: Tensor | None
        patch_embeds: Tensor | None

    class ModelWrapper(nn.Module):
        __space__: str
        def forward(self, batch: dict[str, Tensor]) -> Embeddings: ...

    class ModelTransform:
        def __call__(self, sample: dict[str, Tensor]) -> dict[str, Tensor]: ...
        def fit(self, train_dataset: Iterable[dict[str, Tensor]]) -> None: ...

    ModelTransformPair = tuple[ModelTransform | None, ModelWrapper]
    ModelFn = Callable[..., ModelWrapper | ModelTransformPair]
"""
_FAKE_REGISTRY = """
    import importlib, pkgutil
    import brainmarks.models

    _MODEL_REGISTRY = {}
    PLUGIN_ERRORS = {}

    def register_model(name_or_func=None):
        def _decorator(func):
            name = name_or_func if isinstance(name_or_func, str) else func.__name__
            _MODEL_REGISTRY[name] = func
            return func
        if callable(name_or_func):
            return _decorator(name_or_func)
        return _decorator

    def create_model(name, **kwargs):
        pair = _MODEL_REGISTRY[name](**kwargs)
        return pair if isinstance(pair, tuple) else (None, pair)

    def list_models():
        return list(_MODEL_REGISTRY)

    def import_model_plugins():
        plugins = {}
        for _, name, _ in pkgutil.iter_modules(brainmarks.models.__path__):
            if not (name in {"base", "registry", "template"} or name.startswith("test_")):
                try:
                    plugins[name] = importlib.import_module(f"brainmarks.models.{name}")
                except Exception as exc:
                    PLUGIN_ERRORS[name] = repr(exc)
        return plugins

    _MODEL_PLUGINS = import_model_plugins()
"""


@pytest.fixture
def fake_suite(tmp_path, monkeypatch):
    """The suite's ``brainmarks.models`` (base + registry, the released signatures and
    namespace-package discovery) as a stand-in installation, plus the checkout's portion."""
    models = tmp_path / "suite" / "brainmarks" / "models"  # no __init__.py: namespace package
    models.mkdir(parents=True)
    (models / "base.py").write_text(textwrap.dedent(_FAKE_BASE))
    (models / "registry.py").write_text(textwrap.dedent(_FAKE_REGISTRY))
    for name in [m for m in sys.modules if m == "brainmarks" or m.startswith("brainmarks.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.syspath_prepend(str(tmp_path / "suite"))
    yield
    for name in [m for m in sys.modules if m == "brainmarks" or m.startswith("brainmarks.")]:
        del sys.modules[name]


def test_the_suite_discovers_and_runs_the_plugin(fake_suite, pretrain_ckpt, mask_path):
    from brainmarks.models import base, registry

    assert registry.PLUGIN_ERRORS == {}
    assert "swiftlib" in registry.list_models()
    transform, model = registry.create_model(
        "swiftlib", ckpt_path=str(pretrain_ckpt), mask_path=str(mask_path)
    )
    # the suite's own model check (brainmarks.models.test_models): samples in the model's
    # space -> transform -> default_collate -> model -> (cls, reg, patch)
    samples = [_sample(load_suite_mask(mask_path), 16, tr=1.0, seed=s)[0] for s in range(2)]
    if hasattr(transform, "fit"):
        transform.fit(samples)
    out = model(default_collate([transform(s) for s in samples]))
    assert isinstance(out, base.Embeddings) and isinstance(model, torch.nn.Module)
    assert model.__space__ == "mni"
    assert out.cls_embeds.shape == (2, 1, model.num_features) and out.reg_embeds is None
    assert out.patch_embeds.ndim == 3 and out.patch_embeds.shape[0] == 2
    assert isinstance(model, SwiftlibWrapper)
