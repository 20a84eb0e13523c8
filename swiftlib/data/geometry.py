"""Store geometry: how a store voxel maps to a source (MNI) voxel and back.

Every store lives on one *lattice* in MNI world space: voxel size ``vs`` mm, voxel centres
at integer multiples of ``vs`` (world 0 is a voxel centre, as on the FSL and nilearn MNI
grids), and a fixed ``grid`` (D, H, W) centred on the MNI brain. A source image whose voxel
centres already lie on that lattice (the usual case for MNI derivatives at the target
resolution) is cropped/padded by an **integer offset** — no interpolation; any other
image is resampled onto the store grid first. ``StoreGeometry`` records both affines and
the offset so attribution maps go back to the source grid exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "StoreGeometry",
    "store_affine",
    "mni_brain_centre",
    "lattice_offset",
    "crop_or_pad",
]


def mni_brain_centre() -> np.ndarray:
    """World (mm) centre of the MNI152 brain-mask bounding box (nilearn's bundled mask)."""
    from nilearn.datasets import load_mni152_brain_mask

    mask = load_mni152_brain_mask(resolution=2)
    ijk = np.argwhere(np.asanyarray(mask.dataobj) > 0)  # (N, 3)
    centre_ijk = (ijk.min(0) + ijk.max(0)) / 2.0
    return mask.affine[:3, :3] @ centre_ijk + mask.affine[:3, 3]


def store_affine(grid: tuple[int, int, int], voxel_size: float, centre_mm=None) -> np.ndarray:
    """RAS+ affine of a ``grid`` on the lattice of ``voxel_size`` mm, centred on ``centre_mm``."""
    if centre_mm is None:
        centre_mm = mni_brain_centre()
    grid_arr = np.asarray(grid, dtype=float)
    centre_idx = np.round(np.asarray(centre_mm, float) / voxel_size)  # lattice index of centre
    origin = (centre_idx - np.floor(grid_arr / 2.0)) * voxel_size
    aff = np.eye(4)
    aff[:3, :3] = np.diag([voxel_size] * 3)
    aff[:3, 3] = origin
    return aff


def lattice_offset(source_affine: np.ndarray, target_affine: np.ndarray, tol: float = 1e-3):
    """Integer voxel offset ``o`` with ``source_ijk = store_ijk + o``, or None if not aligned.

    Aligned means both affines are the same diagonal scaling (RAS+) and the origins differ by
    a whole number of voxels.
    """
    src = np.asarray(source_affine, float)
    tgt = np.asarray(target_affine, float)
    if not np.allclose(src[:3, :3], tgt[:3, :3], atol=tol):
        return None
    vs = np.diag(tgt[:3, :3])
    shift = (tgt[:3, 3] - src[:3, 3]) / vs  # store origin in source voxels
    if not np.allclose(shift, np.round(shift), atol=tol):
        return None
    return tuple(int(v) for v in np.round(shift))


def crop_or_pad(data: np.ndarray, offset, grid, fill=0.0) -> np.ndarray:
    """Take ``grid`` voxels starting at source index ``offset`` (negative = pad) from ``data``.

    ``data``: (X, Y, Z, ...) source array; returns (D, H, W, ...) with ``fill`` outside the
    source field of view. Pure slicing: no per-voxel loops.
    """
    out = np.full(tuple(grid) + data.shape[3:], fill, dtype=data.dtype)
    src_sl, dst_sl = [], []
    for o, g, n in zip(offset, grid, data.shape[:3]):
        s0, s1 = max(o, 0), min(o + g, n)
        if s1 <= s0:  # no overlap on this axis
            return out
        src_sl.append(slice(s0, s1))
        dst_sl.append(slice(s0 - o, s1 - o))
    out[tuple(dst_sl)] = data[tuple(src_sl)]
    return out


@dataclass(frozen=True)
class StoreGeometry:
    """Exact mapping between store voxels and the source image grid.

    Attributes:
        grid: store grid (D, H, W).
        voxel_size: store voxel size in mm (isotropic).
        affine: store voxel → MNI world (4×4, RAS+).
        source_shape: spatial shape of the source image (after reorientation to RAS+).
        source_affine: source voxel → world (4×4, RAS+).
        offset: ``source_ijk = store_ijk + offset`` when the source lies on the store lattice,
            None when the source was resampled (then only the affines relate the two).
    """

    grid: tuple[int, int, int]
    voxel_size: float
    affine: tuple
    source_shape: tuple[int, int, int]
    source_affine: tuple
    offset: tuple[int, int, int] | None

    @property
    def affine_array(self) -> np.ndarray:
        return np.asarray(self.affine, dtype=float)

    @property
    def source_affine_array(self) -> np.ndarray:
        return np.asarray(self.source_affine, dtype=float)

    @property
    def resampled(self) -> bool:
        return self.offset is None

    def store_to_source(self, ijk) -> np.ndarray:
        """Store voxel indices (N, 3) → source voxel coordinates (N, 3), exact when aligned."""
        ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
        if self.offset is not None:
            return ijk + np.asarray(self.offset, float)
        world = self.store_to_world(ijk)
        inv = np.linalg.inv(self.source_affine_array)
        return world @ inv[:3, :3].T + inv[:3, 3]

    def source_to_store(self, ijk) -> np.ndarray:
        ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
        if self.offset is not None:
            return ijk - np.asarray(self.offset, float)
        src = self.source_affine_array
        world = ijk @ src[:3, :3].T + src[:3, 3]
        inv = np.linalg.inv(self.affine_array)
        return world @ inv[:3, :3].T + inv[:3, 3]

    def store_to_world(self, ijk) -> np.ndarray:
        ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
        aff = self.affine_array
        return ijk @ aff[:3, :3].T + aff[:3, 3]

    def to_source_array(self, store_data: np.ndarray, fill=0.0) -> np.ndarray:
        """Put a store-grid map (D, H, W, ...) back on the source grid (X, Y, Z, ...).

        Exact (pure indexing) for aligned sources; resampled sources raise — use
        ``to_nifti`` (store grid, MNI affine) and resample with nilearn instead.
        """
        if self.offset is None:
            raise ValueError(
                "this subject was resampled onto the store grid, so there is no exact voxel "
                "inverse; write the map with to_nifti() (MNI affine) and resample it with "
                "nilearn.image.resample_to_img if you need the source grid"
            )
        neg = tuple(-o for o in self.offset)
        return crop_or_pad(store_data, neg, self.source_shape, fill=fill)

    def to_nifti(self, store_data: np.ndarray, space: str = "store"):
        """A nibabel image of a store-grid map: ``space='store'`` (store grid, MNI affine)
        or ``'source'`` (the source grid and affine; aligned sources only)."""
        import nibabel as nib

        if space == "store":
            return nib.Nifti1Image(np.asarray(store_data), self.affine_array)
        if space == "source":
            return nib.Nifti1Image(self.to_source_array(np.asarray(store_data)), self.source_affine_array)
        raise ValueError(f"space={space!r}: expected 'store' or 'source'")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["affine"] = [list(map(float, r)) for r in self.affine]
        d["source_affine"] = [list(map(float, r)) for r in self.source_affine]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> StoreGeometry:
        return cls(
            grid=tuple(int(v) for v in d["grid"]),
            voxel_size=float(d["voxel_size"]),
            affine=tuple(tuple(float(v) for v in r) for r in d["affine"]),
            source_shape=tuple(int(v) for v in d["source_shape"]),
            source_affine=tuple(tuple(float(v) for v in r) for r in d["source_affine"]),
            offset=None if d.get("offset") is None else tuple(int(v) for v in d["offset"]),
        )

    @classmethod
    def build(cls, grid, voxel_size, affine, source_shape, source_affine) -> StoreGeometry:
        offset = lattice_offset(source_affine, affine)
        return cls(
            grid=tuple(int(v) for v in grid),
            voxel_size=float(voxel_size),
            affine=tuple(tuple(float(v) for v in r) for r in np.asarray(affine)),
            source_shape=tuple(int(v) for v in source_shape[:3]),
            source_affine=tuple(tuple(float(v) for v in r) for r in np.asarray(source_affine)),
            offset=offset,
        )
