"""Preprocessing output pinned bit for bit (issue 16: the throughput work must not change a
single stored value).

Each case preprocesses one small deterministic image (int16 like UK Biobank, or float32;
stored in RAS or in FSL's LAS voxel order; on the store lattice, so integer crop/pad, or off
it, so nilearn resampling) into a store and hashes what the store gives back: the fp16
volumes (``read_subject``), the brain mask, the normalisation statistics and the geometry.
The digests were taken from the code before the optimisation (commit ``0cd2b66``). A RAS
and a LAS copy of one image must give the same store (reorientation is exact).
"""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

from swiftlib.data.preprocess import PreprocessConfig, preprocess
from swiftlib.data.store import open_store
from tests.data.test_layouts import _ras_copy

T = 6
GRID = (16, 22, 26)  # mni_ras test grid: a distinct size on every axis
SMALL = (20, 18, 30)  # source: crops x and z, pads y
FSL_SHAPE = (91, 109, 91)  # swift_v1: MNI152NLin6Asym 2 mm


def _image(shape, affine, dtype, seed=0) -> np.ndarray:
    """A brain-masked 4D image (zeros outside an ellipsoid around the MNI brain centre),
    smooth intensities plus noise, and a few in-brain values that are exactly 0."""
    rng = np.random.default_rng(seed)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    w = ijk @ affine[:3, :3].T + affine[:3, 3]
    x, y, z = w[..., 0], w[..., 1], w[..., 2]
    brain = (x / 30) ** 2 + ((y + 18) / 36) ** 2 + ((z - 10) / 28) ** 2 <= 1.0
    base = 900.0 + 3.0 * y + 2.0 * z + 300.0 * np.exp(-((x + 12) ** 2 + y**2) / 150.0)
    data = base[..., None] * (1.0 + 0.05 * rng.standard_normal(shape + (T,)))
    data *= brain[..., None]
    inside = np.argwhere(brain)
    for k in range(5):  # in-brain exact zeros, one frame each
        i, j, m = inside[(k * 7919) % len(inside)]
        data[i, j, m, k % T] = 0.0
    if dtype == "int16":
        return np.round(data).astype(np.int16)
    return data.astype(np.float32)


def _save(data, affine, path):
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 0.8
    img.set_sform(affine, code=4)
    img.set_qform(affine, code=4)
    nib.save(img, path)
    return path


# the same image with x flipped (affine adjusted): RAS <-> LAS, the layouts tests' helper
_as_las = _ras_copy


def _ras_affine(shift_mm: float = 0.0) -> np.ndarray:
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = (-20.0 + shift_mm, -56.0, -20.0)
    return aff


def _fsl_affine() -> np.ndarray:
    aff = np.diag([-2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = (90.0, -126.0, -72.0)
    return aff


def _digest(root) -> str:
    """sha256 (16 hex) of the stored fp16 volumes, mask and normalisation statistics."""
    store = open_store(root)
    (sid,) = store.subject_ids
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(store.read_subject(sid)).tobytes())
    h.update(np.ascontiguousarray(store.mask(sid)).tobytes())
    h.update(json.dumps(store.norm_stats(sid), sort_keys=True).encode())
    geometry = store.geometry(sid).to_dict()
    store.close()
    assert geometry["offset"] is None or len(geometry["offset"]) == 3
    return h.hexdigest()[:16]


def _run(tmp_path, name, data, affine, **cfg) -> str:
    src = tmp_path / f"{name}.nii.gz"
    _save(data, affine, src)
    out = tmp_path / f"store_{name}"
    report = preprocess(src, out, config=PreprocessConfig(min_frames=T, **cfg), progress=False)
    assert report.ok, report.failed
    return _digest(out)


# (layout, normalisation, dtype, on the lattice) -> digest of the store made from the RAS
# file; the LAS copy of the file must give the same digest.
PINNED = {
    ("mni_ras", "zscore_global", "int16", True): "98fa066622fc22a7",
    ("mni_ras", "zscore_global", "float32", True): "bd32bcc288c49847",
    ("mni_ras", "zscore_voxel", "int16", True): "4d96449ca3a414f3",
    ("mni_ras", "psc", "int16", True): "91635d81f289966c",
    ("mni_ras", "none", "float32", True): "afedef2658942f1d",
    ("mni_ras", "zscore_global", "float32", False): "48505658f1a934b1",
    ("swift_v1", "zscore_global", "int16", True): "f433fd521f0dc621",
    ("swift_v1", "zscore_global", "float32", True): "a442548dec0d0e8e",
}


@pytest.mark.parametrize("case", list(PINNED), ids=lambda c: "-".join(map(str, c)))
def test_store_output_is_pinned_for_ras_and_las_inputs(tmp_path, case):
    layout, norm, dtype, on_lattice = case
    import torch

    # SwiFT v1's z-score is torch arithmetic (as v1's preprocessing): its reductions split
    # over threads, so its last bits depend on the thread count — pinned with one thread
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _check_pinned(tmp_path, case)
    finally:
        torch.set_num_threads(threads)


def _check_pinned(tmp_path, case):
    layout, norm, dtype, on_lattice = case
    if layout == "swift_v1":
        affine = _fsl_affine()
        data = _image(FSL_SHAPE, affine, dtype)
        # the RAS copy of the FSL image: x flipped back
        ras, ras_aff = _as_las(data, affine)
        cfg = dict(layout="swift_v1", grid=(96, 96, 96))
        las, las_aff = data, affine
    else:
        ras_aff = _ras_affine(0.0 if on_lattice else 1.0)
        ras = _image(SMALL, ras_aff, dtype)
        las, las_aff = _as_las(ras, ras_aff)
        cfg = dict(grid=GRID)
    got_ras = _run(tmp_path, "ras", ras, ras_aff, normalisation=norm, **cfg)
    got_las = _run(tmp_path, "las", las, las_aff, normalisation=norm, **cfg)
    assert got_ras == PINNED[case], f"RAS input: store digest {got_ras}"
    if on_lattice:  # resampling a mirrored grid is not exact to the last bit
        assert got_las == got_ras, "the LAS copy of the image gave another store"


@pytest.mark.parametrize("block", [128, 1000, 1 << 16])
def test_std64_is_numpys_float64_std_bit_for_bit(monkeypatch, block):
    """The blocked standard deviation behind the global z-score equals ``np.std(dtype=float64)``
    exactly for odd and even sizes, across the block boundary and for 2D (N, T) arrays; if a
    numpy release sums differently, this fails before any store changes."""
    from swiftlib.data import transform

    monkeypatch.setattr(transform, "STD_BLOCK", block)
    rng = np.random.default_rng(0)
    for n, t in [(1000, 1), (4097, 3), (65536, 1), (100003, 7), (300001, 5)]:
        values = rng.normal(800.0, 50.0, size=(n, t)).astype(np.float32)
        mean = float(values.mean(dtype=np.float64))
        assert transform.std64(values, mean) == float(values.std(dtype=np.float64)), (n, t)


@pytest.mark.parametrize("order", ["C", "F"])
def test_the_frame_by_frame_gather_equals_direct_boolean_indexing(order):
    from swiftlib.data.transform import _gather_brain

    rng = np.random.default_rng(2)
    data = np.asarray(rng.integers(-500, 500, size=(9, 11, 7, 5)), dtype=np.int16, order=order)
    mask = rng.random((9, 11, 7)) < 0.4
    for view in (data, data[::-1], data[:, ::-1, :, :]):
        got = _gather_brain(view, mask, block=13)  # blocks that do not divide N
        assert got.dtype == np.float32
        assert np.array_equal(got, view[mask].astype(np.float32))
    doubles = rng.normal(size=(9, 11, 7, 5))  # float64 rounds to float32 as astype does
    assert np.array_equal(_gather_brain(doubles, mask), doubles[mask].astype(np.float32))
