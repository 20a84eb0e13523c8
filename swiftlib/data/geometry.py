"""Store geometry: how a store voxel maps to a source (MNI) voxel and back.

Every store lives on one *lattice* in MNI world space: voxel size ``vs`` mm, voxel centres
at integer multiples of ``vs`` (world 0 is a voxel centre, as on the FSL and nilearn MNI
grids), and a fixed ``grid`` (D, H, W) centred on the MNI brain. A source image whose voxel
centres already lie on that lattice (the usual case for MNI derivatives at the target
resolution) is cropped/padded by an **integer offset** — no interpolation; any other
image is resampled onto the store grid first. ``StoreGeometry`` records both affines, the
offset and the voxel orders so attribution maps go back to the source grid exactly.

Voxel order: the store's arrays follow its layout's order (``axcodes``, e.g. ``"RAS"``, or
``"LAS"`` for the ``swift_v1`` layout; :mod:`swiftlib.data.layouts`). A source in another
order is reoriented into the layout's order before it is placed (flips and axis swaps only),
and the geometry remembers the file's own order (``source_axcodes``), so a map goes back onto
the source file's voxel grid — same shape, same affine — whatever the layout.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from swiftlib.utils.validation import check_choice

__all__ = [
    "StoreGeometry",
    "store_affine",
    "mni_brain_centre",
    "lattice_offset",
    "crop_or_pad",
]

log = logging.getLogger(__name__)


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

    Aligned means both affines have the same diagonal scaling (the same voxel order, e.g. both
    RAS+ or both LAS) and the origins differ by a whole number of voxels.
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


def crop_or_pad(data: np.ndarray, offset, grid, fill=0.0, dtype=None) -> np.ndarray:
    """Take ``grid`` voxels starting at source index ``offset`` (negative = pad) from ``data``.

    ``data``: (X, Y, Z, ...) source array; returns (D, H, W, ...) (``dtype``, default the
    source's: the cast happens in the one copy) with ``fill`` outside the source field of
    view. Pure slicing: no per-voxel loops; each output value is written once.
    """
    out = np.empty(tuple(grid) + data.shape[3:], dtype=data.dtype if dtype is None else dtype)
    src_sl, dst_sl = [], []
    for o, g, n in zip(offset, grid, data.shape[:3]):
        s0, s1 = max(o, 0), min(o + g, n)
        if s1 <= s0:  # no overlap on this axis
            out[...] = fill
            return out
        src_sl.append(slice(s0, s1))
        dst_sl.append(slice(s0 - o, s1 - o))
    for axis, sl in enumerate(dst_sl):  # the pad: the slabs before and after the copied box
        inner = tuple(dst_sl[:axis])  # earlier axes: their slabs are already filled
        out[inner + (slice(0, sl.start),)] = fill
        out[inner + (slice(sl.stop, None),)] = fill
    out[tuple(dst_sl)] = data[tuple(src_sl)]
    return out


@dataclass(frozen=True)
class StoreGeometry:
    """Exact mapping between store voxels and the source image grid.

    Attributes:
        grid: store grid (D, H, W).
        voxel_size: store voxel size in mm (isotropic).
        affine: store voxel → MNI world (4×4) in the store's voxel order ``axcodes``.
        source_shape: spatial shape of the source image after reorientation to ``axcodes``.
        source_affine: source voxel → world (4×4) after reorientation to ``axcodes``.
        offset: ``source_ijk = store_ijk + offset`` when the source lies on the store lattice,
            None when the source was resampled (then only the affines relate the two).
        axcodes: voxel order of the store arrays (the layout's; ``"RAS"`` for stores written
            before layouts existed).
        source_axcodes: the source file's own voxel order when it differs from ``axcodes``
            (the file was reoriented on loading), else None.
    """

    grid: tuple[int, int, int]
    voxel_size: float
    affine: tuple
    source_shape: tuple[int, int, int]
    source_affine: tuple
    offset: tuple[int, int, int] | None
    axcodes: str = "RAS"
    source_axcodes: str | None = None

    @property
    def affine_array(self) -> np.ndarray:
        return np.asarray(self.affine, dtype=float)

    @property
    def source_affine_array(self) -> np.ndarray:
        return np.asarray(self.source_affine, dtype=float)

    @property
    def resampled(self) -> bool:
        return self.offset is None

    # -- the source file's own grid (its voxel order) -----------------------------------------
    def _to_file_ornt(self):
        """nibabel orientation transform from the store's voxel order to the file's, or None."""
        if self.source_axcodes is None or self.source_axcodes == self.axcodes:
            return None
        from nibabel.orientations import axcodes2ornt, ornt_transform

        return ornt_transform(
            axcodes2ornt(tuple(self.axcodes)), axcodes2ornt(tuple(self.source_axcodes))
        )

    @property
    def file_shape(self) -> tuple[int, int, int]:
        """Spatial shape of the source file as written (its own voxel order)."""
        t = self._to_file_ornt()
        if t is None:
            return self.source_shape
        return tuple(int(self.source_shape[int(i)]) for i in np.argsort(t[:, 0]))

    @property
    def file_affine(self) -> np.ndarray:
        """Voxel → world affine of the source file as written (its own voxel order)."""
        t = self._to_file_ornt()
        if t is None:
            return self.source_affine_array
        from nibabel.orientations import inv_ornt_aff

        return self.source_affine_array @ inv_ornt_aff(t, self.source_shape)

    # -- coordinates ------------------------------------------------------------------------
    def store_to_source(self, ijk) -> np.ndarray:
        """Store voxel indices (N, 3) → source voxel coordinates (N, 3) in the store's voxel
        order (``source_affine``), exact when aligned."""
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

    # -- maps back to the source --------------------------------------------------------------
    def to_source_array(self, store_data: np.ndarray, fill=0.0) -> np.ndarray:
        """Put a store-grid map (D, H, W, ...) back on the source file's grid (X, Y, Z, ...),
        in the file's own voxel order (``file_shape``, ``file_affine``).

        Exact (pure indexing: the inverse crop/pad, then the inverse reorientation) for
        aligned sources; resampled sources raise — use ``to_nifti(space="source")``, which
        resamples with nilearn, or ``to_nifti(space="store")``.
        """
        if self.offset is None:
            raise ValueError(
                "this subject was resampled onto the store grid, so there is no exact voxel "
                "inverse; to_nifti(space='store') writes the map on the store grid (MNI affine) "
                "and to_nifti(space='source') resamples it onto the source grid with nilearn"
            )
        neg = tuple(-o for o in self.offset)
        out = crop_or_pad(store_data, neg, self.source_shape, fill=fill)
        t = self._to_file_ornt()
        if t is not None:
            from nibabel.orientations import apply_orientation

            out = np.ascontiguousarray(apply_orientation(out, t))
        return out

    def to_nifti(
        self, store_data: np.ndarray, space: str = "store", interpolation: str = "continuous"
    ):
        """A nibabel image of a store-grid map (D, H, W[, ...]).

        ``space='store'``: the store grid with its MNI affine. ``'source'``: the source
        file's grid and affine — the exact inverse for aligned sources; for resampled sources
        the map is resampled with nilearn (``interpolation``: ``"continuous"`` for maps,
        ``"nearest"`` for masks and labels), an approximation logged as such.
        """
        import nibabel as nib

        check_choice("space", space, ("store", "source"))
        data = np.asarray(store_data)
        if space == "store":
            return nib.Nifti1Image(data, self.affine_array)
        if self.offset is not None:
            return nib.Nifti1Image(self.to_source_array(data), self.file_affine)
        from nilearn.image import resample_img

        check_choice("interpolation", interpolation, ("continuous", "linear", "nearest"))
        log.info(
            "resampling a store-grid map onto the source grid %s (%s interpolation): the subject "
            "was resampled onto the store grid, so this inverse is approximate",
            self.file_shape,
            interpolation,
        )
        img = nib.Nifti1Image(
            data.astype(np.float32) if data.dtype == bool else data, self.affine_array
        )
        return resample_img(
            img,
            target_affine=self.file_affine,
            target_shape=self.file_shape,
            interpolation=interpolation,
            force_resample=True,
            copy_header=True,
        )

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
            axcodes=str(d.get("axcodes", "RAS")),
            source_axcodes=d.get("source_axcodes"),
        )

    @classmethod
    def build(
        cls, grid, voxel_size, affine, source_shape, source_affine, source_axcodes=None
    ) -> StoreGeometry:
        """Geometry of a source (already in the store's voxel order) on the store grid.
        ``source_axcodes``: the file's own order when it was reoriented on loading."""
        import nibabel as nib

        affine = np.asarray(affine, dtype=float)
        axcodes = "".join(nib.aff2axcodes(affine))
        offset = lattice_offset(source_affine, affine)
        src_codes = None if source_axcodes is None else "".join(source_axcodes)
        return cls(
            grid=tuple(int(v) for v in grid),
            voxel_size=float(voxel_size),
            affine=tuple(tuple(float(v) for v in r) for r in affine),
            source_shape=tuple(int(v) for v in source_shape[:3]),
            source_affine=tuple(tuple(float(v) for v in r) for r in np.asarray(source_affine)),
            offset=offset,
            axcodes=axcodes,
            source_axcodes=None if src_codes == axcodes else src_codes,
        )
