"""The per-scan array transform of preprocessing: source voxels (in the layout's voxel
order) → store grid → brain mask → optional denoising and temporal resampling → normalised
volumes. Pure arrays in, arrays out; :mod:`swiftlib.data.preprocess` drives it over a cohort.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from swiftlib.data.geometry import StoreGeometry, crop_or_pad
from swiftlib.data.inputs import PreprocessError
from swiftlib.data.layouts import get_layout
from swiftlib.data.store import NORM_METHODS

if TYPE_CHECKING:
    from swiftlib.data.preprocess import PreprocessConfig

__all__ = ["normalise", "normalise_brain", "std64", "zscore_swift_v1", "prepare_subject"]

log = logging.getLogger(__name__)


def normalise(data: np.ndarray, mask: np.ndarray, method: str, name: str = "image"):
    """Normalise ``data`` (D, H, W, T) inside ``mask`` (D, H, W). Returns ``(out, stats)``.

    ``zscore_global``: (x − mean) / std over brain voxels and time (SwiFT); ``zscore_voxel``:
    per voxel over time (constant voxels → 0); ``psc``: percent signal change per voxel,
    100 · (x − mean_t) / mean_t — the BOLD fluctuation itself, free of the static intensity
    pattern and scanner scale, amplitudes kept (voxels whose time mean is below 1 % of the
    brain's median are set to 0 and counted); ``none``. The background is filled with the
    in-brain minimum (SwiFT's convention) so it reads as "darker than any brain voxel";
    with ``psc`` it is 0 (no signal change).
    """
    brain = data[mask]  # (N, T) in-brain time series (a copy)
    z, stats = normalise_brain(brain, method, name=name)
    return _on_grid(z, mask, stats["fill_value"], np.float32), stats


def normalise_brain(brain: np.ndarray, method: str, name: str = "image"):
    """:func:`normalise` of the in-brain series alone: ``brain`` (N, T) float32 (it may be
    overwritten: ``zscore_global`` works in place) → ``(z (N, T) float32, stats)``, with the
    background value in ``stats["fill_value"]``. No full-grid array is made."""
    if brain.size == 0:
        raise PreprocessError(
            f"{name}: the brain mask is empty on the store grid; expected brain voxels inside the "
            "grid"
        )
    mean_all = float(brain.mean(dtype=np.float64))
    std_all = std64(brain, mean_all)
    if std_all == 0.0 or not np.isfinite(std_all):
        raise PreprocessError(
            f"{name}: the brain has zero variance (every in-brain value is "
            f"{float(brain.flat[0]):g}); expected a real BOLD series"
        )
    stats: dict = {"method": method}
    if method == "zscore_global":
        mean = mean_all
        # in place, float32 (the Python scalars are cast to float32 first, as in
        # ``(brain - mean) / std``): the same bits without a second (N, T) array
        if brain.dtype == np.float32:
            z = brain
            z -= mean
            z /= std_all
        else:
            z = (brain - mean) / std_all
        stats.update(mean=mean, std=std_all)
    elif method == "zscore_voxel":
        mu = brain.mean(axis=1, keepdims=True)  # (N, 1)
        sd = brain.std(axis=1, keepdims=True)  # (N, 1)
        z = np.where(sd > 0, (brain - mu) / np.where(sd > 0, sd, 1.0), 0.0)
        stats.update(
            mean=float(mu.mean()), std=float(sd.mean()), constant_voxels=int((sd == 0).sum())
        )
    elif method == "psc":
        mu = brain.mean(axis=1, keepdims=True, dtype=np.float64)  # (N, 1)
        ok = mu > 0.01 * np.median(mu)
        z = np.where(ok, (brain - mu) / np.where(ok, mu, 1.0) * 100.0, 0.0).astype(np.float32)
        stats.update(mean=float(mu.mean()), low_mean_voxels=int((~ok).sum()))
    elif method == "none":
        z = brain
    else:
        raise PreprocessError(f"normalisation={method!r}: expected one of {NORM_METHODS}")
    stats["fill_value"] = 0.0 if method == "psc" else float(z.min())
    return z, stats


#: elements per block of :func:`std64` (512 KiB of float64: stays in cache)
STD_BLOCK = 1 << 16


def std64(values: np.ndarray, mean: float) -> float:
    """``values.std(dtype=np.float64)`` bit for bit, given ``mean`` =
    ``values.mean(dtype=np.float64)``, without its float64 copy of ``values``.

    numpy sums the squared deviations of the flattened array pairwise: halves of ``n // 2``
    rounded down to a multiple of 8, recursively, down to blocks of at most 128. Splitting
    the same way down to blocks of at most :data:`STD_BLOCK` and letting numpy sum each block
    reproduces every partial sum, so the result is identical (tests/data/test_preprocess_pinned.py
    checks it against ``np.std`` over sizes and block sizes) while the float64 temporary is
    one cache-sized block instead of 8 bytes per value (0.9 GB for a UK Biobank scan).
    """
    flat = np.ascontiguousarray(values).reshape(-1)
    m = np.float64(mean)
    block = int(STD_BLOCK)

    def pairwise(start: int, n: int) -> np.float64:
        if n <= block:
            x = flat[start : start + n].astype(np.float64)  # (n,)
            x -= m
            np.multiply(x, x, out=x)
            return np.add.reduce(x)
        half = n // 2
        half -= half % 8
        return pairwise(start, half) + pairwise(start + half, n - half)

    if flat.size == 0:
        return float("nan")
    return float(np.sqrt(pairwise(0, flat.size) / flat.size))


def _on_grid(z: np.ndarray, mask: np.ndarray, fill: float, dtype) -> np.ndarray:
    """In-brain series ``z`` (N, T) onto the grid of ``mask`` (D, H, W) as ``dtype``
    (D, H, W, T), ``fill`` elsewhere. Casting float32 → float16 here rounds each value as
    ``astype`` on the full float32 grid would, without that grid."""
    out = np.empty(mask.shape + z.shape[1:], dtype=dtype)  # (D, H, W, T)
    out[...] = np.float32(fill)
    out[mask] = z
    return out


def zscore_swift_v1(data: np.ndarray, mask: np.ndarray, name: str = "image"):
    """SwiFT v1's global z-score, value for value (the ``swift_v1`` layout's arithmetic).

    ``data`` (D, H, W, T) float32, ``mask`` (D, H, W). The brain is every **non-zero** value
    inside ``mask``, element-wise in space and time (v1 treats each exact zero as background,
    so an in-brain voxel that is 0 in one frame is background in that frame). Mean and
    standard deviation are taken over those values the way v1 takes them — torch, float32,
    the unbiased (n − 1) standard deviation — then ``(x − mean) / std`` in float32, and every
    background value becomes the in-brain minimum. Returns ``(out float32, stats)``.
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))  # (D, H, W, T)
    in_mask = torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))  # (D, H, W)
    brain = in_mask[..., None] & (x != 0)  # (D, H, W, T)
    values = x[brain]  # (N,) in C order, as v1 gathers them
    if values.numel() < 2:
        raise PreprocessError(
            f"{name}: {values.numel()} non-zero in-brain values on the store grid; expected a brain"
        )
    mean, std = values.mean(), values.std()  # float32; std unbiased, as torch's default in v1
    if not (float(std) > 0 and np.isfinite(float(std))):
        raise PreprocessError(
            f"{name}: the brain has zero variance (every in-brain value is {float(values[0]):g}); "
            "expected a real BOLD series"
        )
    # = min over the brain of (x - mean) / std (rounding is monotone)
    fill = (values.min() - mean) / std
    del values
    out = (x - mean) / std  # (D, H, W, T) float32
    out.masked_fill_(~brain, fill)
    zeros_in_mask = int(in_mask.sum()) * x.shape[3] - int(brain.sum())  # in-brain exact zeros
    stats = {
        "method": "zscore_global",
        "arithmetic": "swift_v1",
        "mean": float(mean),
        "std": float(std),
        "fill_value": float(fill),
        "zero_values_in_mask": zeros_in_mask,
    }
    return out.numpy(), stats


def _mask_on_store(mask_spec: str, affine, grid) -> np.ndarray:
    import nibabel as nib
    from nilearn.image import resample_img

    if mask_spec == "mni":
        from nilearn.datasets import load_mni152_brain_mask

        img = load_mni152_brain_mask(resolution=2)
    else:
        img = nib.load(mask_spec)
    res = resample_img(
        img,
        target_affine=affine,
        target_shape=tuple(grid),
        interpolation="nearest",
        force_resample=True,
        copy_header=True,
    )
    return np.asarray(res.dataobj) > 0


def prepare_subject(
    data,
    affine,
    cfg: PreprocessConfig,
    name: str = "image",
    store_aff=None,
    source_axcodes=None,
    tr: float | None = None,
    confounds=None,
    dtype=np.float32,
):
    """Source data (X, Y, Z, T) in the layout's voxel order (:func:`load_bold` with the
    layout's ``axcodes``) → ``(bold (D, H, W, T') dtype, mask, geometry, stats)``.
    ``data`` may be the file's own numbers (e.g. int16, :func:`load_scan` with ``raw=True``):
    every value is taken as its float32 value. ``dtype``: float32, or float16 (what the
    store keeps; made from the float32 values without a float32 grid).
    ``source_axcodes``: the file's own voxel order when it was reoriented (recorded in the
    geometry so maps go back onto the file's grid). ``confounds``: ``(table, sample_mask)``
    from :func:`swiftlib.data.denoise.load_strategy` to denoise with (needs ``tr``);
    ``cfg.target_tr`` resamples time from ``tr`` (:mod:`swiftlib.data.temporal`). Both act
    on the in-brain voxels after masking and before normalisation; ``stats`` records them
    (``"denoise"``, ``"temporal"``).

    A source on the store lattice with swiftlib's arithmetic and a brain-masked (or given)
    mask takes the lean path: the mask comes from the source's non-zero voxels, only the
    in-brain series are gathered and normalised, and the grid is made once in ``dtype`` —
    the same values as cropping the whole float32 image first, without its copies."""
    import nibabel as nib

    grid = cfg.grid
    layout = get_layout(cfg.layout)
    store_aff = layout.store_affine(grid, cfg.voxel_size) if store_aff is None else store_aff
    src_codes = "".join(nib.aff2axcodes(affine))
    if src_codes != layout.axcodes:  # a mirrored placement would follow silently: refuse
        raise PreprocessError(
            f"{name}: the source is in {src_codes} voxel order; layout {layout.name!r} "
            f"stores {layout.axcodes} — load it with load_bold(..., axcodes={layout.axcodes!r})"
        )
    geom = StoreGeometry.build(
        grid, cfg.voxel_size, store_aff, data.shape[:3], affine, source_axcodes
    )
    if geom.axcodes != layout.axcodes:
        raise PreprocessError(
            f"{name}: the store affine is in {geom.axcodes} voxel order; layout "
            f"{layout.name!r} stores {layout.axcodes}"
        )
    lean = (
        geom.offset is not None
        and layout.arithmetic != "swift_v1"
        and confounds is None
        and cfg.target_tr is None
    )
    if lean:
        out = _prepare_on_lattice(data, geom, cfg, store_aff, name, dtype)
        if out is not None:
            return out
    data = np.asarray(data, dtype=np.float32)
    if geom.offset is not None:  # on the lattice: exact integer crop/pad
        vol = crop_or_pad(data, geom.offset, grid)  # (D, H, W, T)
        fov = crop_or_pad(np.ones(data.shape[:3], bool), geom.offset, grid, fill=False)  # (D, H, W)
    else:
        from nilearn.image import resample_img

        log.info("%s: not on the %g mm store lattice; resampling", name, cfg.voxel_size)
        kw = dict(target_affine=store_aff, target_shape=grid, force_resample=True, copy_header=True)
        vol = np.asarray(
            resample_img(nib.Nifti1Image(data, affine), interpolation="continuous", **kw).dataobj,
            np.float32,
        )
        fov = (
            np.asarray(
                resample_img(
                    nib.Nifti1Image(np.ones(data.shape[:3], np.uint8), affine),
                    interpolation="nearest",
                    **kw,
                ).dataobj
            )
            > 0
        )
    if cfg.mask == "auto":
        nonzero = np.any(vol, axis=3)  # (D, H, W); any() is "!= 0" without a 4D temporary
        if _skull_stripped(nonzero, fov):
            mask = nonzero
        else:
            mask = _epi_mask(vol, store_aff)
    else:
        mask = _mask_on_store(cfg.mask, store_aff, grid)
    mask &= fov
    if geom.offset is not None:
        lost = int(np.any(data, axis=3).sum()) - int(np.any(vol, axis=3).sum())
        _warn_lost(lost, name, grid, layout)
    extra = {}
    if confounds is not None or cfg.target_tr is not None:
        vol, extra = _clean_and_resample(vol, mask, cfg, tr, confounds, name)
    if layout.arithmetic == "swift_v1":
        bold, stats = zscore_swift_v1(vol, mask, name=name)
        bold = bold.astype(dtype, copy=False)
    else:
        del data
        brain = vol[mask]  # (N, T)
        del vol
        z, stats = normalise_brain(brain, cfg.normalisation, name=name)
        bold = _on_grid(z, mask, stats["fill_value"], dtype)
    stats.update(extra)
    return bold, mask, geom, stats


def _skull_stripped(nonzero: np.ndarray, fov: np.ndarray) -> bool:
    """Zeros outside the brain: at least 10 % of the field of view is zero in every frame."""
    return bool(fov.sum() and (~nonzero & fov).sum() >= 0.1 * fov.sum())


def _epi_mask(vol: np.ndarray, store_aff) -> np.ndarray:
    import nibabel as nib
    from nilearn.masking import compute_epi_mask

    return np.asarray(compute_epi_mask(nib.Nifti1Image(vol, store_aff)).dataobj) > 0


def _warn_lost(lost: int, name: str, grid, layout) -> None:
    if lost > 0:
        log.warning(
            "%s: %d non-zero voxels fall outside the %s store grid%s",
            name,
            lost,
            grid,
            " (SwiFT v1 counted them in its z-score statistics; these statistics leave them out)"
            if layout.arithmetic == "swift_v1"
            else "",
        )


def _gather_brain(data: np.ndarray, mask_src: np.ndarray, block: int = 4096) -> np.ndarray:
    """``data[mask_src].astype(np.float32)`` — the in-brain series (N, T) in C order — read
    frame by frame. A NIfTI's frames are contiguous on disk and in nibabel's (Fortran-order)
    array, so gathering each frame (T, N) and transposing in cache-sized blocks while casting
    reads memory in order; the direct 4D boolean index strides across every frame for each
    voxel (2.5× slower here)."""
    T = data.shape[3]
    N = int(mask_src.sum())
    by_frame = np.empty((T, N), dtype=data.dtype)  # (T, N)
    for t in range(T):
        by_frame[t] = data[..., t][mask_src]
    brain = np.empty((N, T), dtype=np.float32)  # (N, T)
    for start in range(0, N, block):
        brain[start : start + block] = by_frame[:, start : start + block].T
    return brain


def _prepare_on_lattice(data, geom: StoreGeometry, cfg: PreprocessConfig, store_aff, name, dtype):
    """The lean path of :func:`prepare_subject` (its docstring); None when the image is not
    brain-masked and ``mask="auto"`` needs nilearn's EPI mask of the whole cropped image."""
    grid = cfg.grid
    nonzero_src = np.any(data, axis=3)  # (X, Y, Z): one pass over the file's numbers
    nonzero = crop_or_pad(nonzero_src, geom.offset, grid, fill=False)  # (D, H, W)
    fov = crop_or_pad(np.ones(data.shape[:3], bool), geom.offset, grid, fill=False)  # (D, H, W)
    if cfg.mask == "auto":
        if not _skull_stripped(nonzero, fov):
            return None
        mask = nonzero
    else:
        mask = _mask_on_store(cfg.mask, store_aff, grid)
    mask &= fov
    _warn_lost(int(nonzero_src.sum()) - int(nonzero.sum()), name, grid, get_layout(cfg.layout))
    # the store's brain voxels on the source grid: the integer shift keeps C order, so the
    # (N, T) series come out in the order the cropped grid would give them
    mask_src = crop_or_pad(mask, tuple(-o for o in geom.offset), data.shape[:3], fill=False)
    brain = _gather_brain(data, mask_src)  # (N, T) float32
    z, stats = normalise_brain(brain, cfg.normalisation, name=name)
    return _on_grid(z, mask, stats["fill_value"], dtype), mask, geom, stats


def _clean_and_resample(vol, mask, cfg: PreprocessConfig, tr, confounds, name):
    """Denoise, then resample time, the in-brain series of ``vol`` (D, H, W, T); the
    background stays 0 (normalisation fills it). Returns ``(vol (D, H, W, T'), stats)``."""
    from swiftlib.data.denoise import denoise
    from swiftlib.data.temporal import resample_time

    if tr is None:
        raise PreprocessError(f"{name}: denoising or target_tr needs the scan's TR; none given")
    series = vol[mask]  # (N, T) in-brain time series
    extra: dict = {}
    if confounds is not None:
        table, sample_mask = confounds
        series, info = denoise(series, table, sample_mask, tr, name=name)  # (N, T')
        extra["denoise"] = {"strategy": cfg.denoise, "method": "nilearn.signal.clean", **info}
    if cfg.target_tr is not None:
        try:
            series, extra["temporal"] = resample_time(series, tr, cfg.target_tr)  # (N, T')
        except ValueError as e:
            raise PreprocessError(f"{name}: {e}") from None
    T_out = series.shape[1]
    if T_out < cfg.min_frames:
        raise PreprocessError(
            f"{name}: {T_out} frames after denoising/resampling (TR {tr:g} s → "
            f"{cfg.target_tr or tr:g} s); expected at least min_frames={cfg.min_frames}"
        )
    out = np.zeros((*vol.shape[:3], T_out), np.float32)  # (D, H, W, T')
    out[mask] = series
    return out, extra
