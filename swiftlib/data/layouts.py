"""Input layouts and templates: the named conventions a store's voxels follow.

A model sees arrays, not brains: the same fMRI volume mirrored left-right, shifted by seven
voxels or normalised with other statistics is a different input to it. A **layout** names
how a store array sits in MNI world space, so the convention is recorded in the store and in
every checkpoint's contract instead of living in someone's loader:

* the **voxel order** of the stored arrays (``axcodes``: ``"RAS"`` = the first axis runs
  towards Right, the second Anterior, the third Superior; ``"LAS"`` runs towards Left first);
  a source image in any other order is reoriented (flips/permutations, never interpolated)
  into the layout's order, so a RAS and a LAS copy of one image give one store;
* the **grid placement** (store grid and affine): a fixed world box, or a grid centred on
  the MNI brain; with the source's affine it fixes the crop/pad of every source;
* for layouts that reproduce another code base's input, the **normalisation arithmetic**.

Registered layouts:

``mni_ras`` (default)
    RAS+ voxel order, the store grid centred on the MNI152 brain-mask box on the
    ``voxel_size`` lattice (see :mod:`swiftlib.data.geometry`); any grid and voxel size;
    swiftlib's normalisation arithmetic. What every swiftlib store was before layouts existed.
``swift_v1``
    SwiFT v1's input (Kim et al., NeurIPS 2023; public code Transconnectome/SwiFT): the
    image is kept in the FSL/HCP voxel order LAS (v1 loads NIfTI files without reorienting),
    and on the MNI152NLin6Asym 2 mm grid (91 × 109 × 91, affine diag(−2, 2, 2), origin
    (90, −126, −72)) x is padded by 3|2 voxels, y cropped by 7|6 and z padded by 3|2 to
    96³ — the UK Biobank branch of v1's ``datasets.py``, the one written for this grid. As a
    world box: store voxel (0, 0, 0) at (96, −112, −78) mm, 2 mm voxels, x decreasing.
    Normalisation is v1's global z-score: mean and unbiased (n − 1) standard deviation
    over the non-zero in-brain values in float32, background (every zero value,
    element-wise in space and time, and everything outside the brain) filled with the
    in-brain minimum, then fp16. Equal bit for bit to v1's preprocessing for brain-masked
    inputs whose brain lies inside the 96³ box (tests/data/test_layouts.py).

**Templates** name the MNI space itself (TemplateFlow identifiers): ``MNI152NLin6Asym``
(FSL, HCP, UK Biobank), ``MNI152NLin2009cAsym`` (fMRIPrep's default) and the other MNI
templates differ by a few millimetres in places, so a checkpoint trained on one is warned
(or refused) on another; ``unknown`` when an input does not say.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from swiftlib.utils.validation import check_choice

__all__ = [
    "DEFAULT_LAYOUT",
    "KNOWN_TEMPLATES",
    "UNKNOWN_TEMPLATE",
    "Layout",
    "get_layout",
    "list_layouts",
    "check_template",
    "pad_crop",
]

DEFAULT_LAYOUT = "mni_ras"
UNKNOWN_TEMPLATE = "unknown"
#: TemplateFlow identifiers of the MNI templates a store may record.
KNOWN_TEMPLATES = (
    "MNI152NLin6Asym",
    "MNI152NLin2009cAsym",
    "MNI152NLin6Sym",
    "MNI152NLin2009cSym",
    "MNI152NLin2009aAsym",
    "MNI152NLin2009aSym",
    "MNI152NLin2009bAsym",
    "MNI152NLin2009bSym",
    "MNI152Lin",
    "MNI305",
    "MNIColin27",
    "MNIPediatricAsym",
    "MNIInfant",
)
_SIGN = {"R": 1.0, "L": -1.0, "A": 1.0, "P": -1.0, "S": 1.0, "I": -1.0}


@dataclass(frozen=True)
class Layout:
    """A named store-voxel convention (module docstring).

    Attributes:
        name: registry name, recorded in the store manifest and checkpoint contracts.
        axcodes: voxel order of the stored arrays, e.g. ``"RAS"`` or ``"LAS"``.
        description: one line for errors, ``swiftlib info`` and the docs.
        grid: the only allowed store grid ``(D, H, W)``, or None (any grid).
        voxel_size: the only allowed voxel size in mm, or None (any).
        origin_mm: world position of store voxel (0, 0, 0) when the grid is a fixed box;
            None: centred on the MNI152 brain on the ``voxel_size`` lattice.
        normalisation: the only allowed normalisation, or None (any).
        arithmetic: ``"swiftlib"`` or ``"swift_v1"`` (how ``zscore_global`` is computed).
    """

    name: str
    axcodes: str
    description: str
    grid: tuple[int, int, int] | None = None
    voxel_size: float | None = None
    origin_mm: tuple[float, float, float] | None = None
    normalisation: str | None = None
    arithmetic: str = "swiftlib"

    def __post_init__(self):
        if sorted(self.axcodes.replace("L", "R").replace("P", "A").replace("I", "S")) != [
            "A",
            "R",
            "S",
        ]:
            raise ValueError(
                f"layout {self.name!r}: axcodes={self.axcodes!r}; expected one of R/L, A/P, S/I "
                "each, e.g. 'RAS'"
            )
        if self.origin_mm is None and self.axcodes != "RAS":
            raise ValueError(
                f"layout {self.name!r}: a brain-centred grid is defined for 'RAS' only; give "
                "origin_mm"
            )
        check_choice("arithmetic", self.arithmetic, ("swiftlib", "swift_v1"))

    def check(self, grid, voxel_size: float, normalisation: str | None = None) -> None:
        """Refuse settings the layout does not define (``ValueError`` naming both)."""
        grid = tuple(int(g) for g in grid)
        wrong = []
        if self.grid is not None and grid != self.grid:
            wrong.append(f"grid={grid} (it needs {self.grid})")
        if self.voxel_size is not None and float(voxel_size) != self.voxel_size:
            wrong.append(f"voxel_size={voxel_size:g} mm (it needs {self.voxel_size:g} mm)")
        if (
            self.normalisation is not None
            and normalisation is not None
            and normalisation != self.normalisation
        ):
            wrong.append(f"normalisation={normalisation!r} (it needs {self.normalisation!r})")
        if wrong:
            raise ValueError(
                f"layout {self.name!r} ({self.description}) is not defined for {', '.join(wrong)}; "
                f"leave those settings at the layout's values or use layout {DEFAULT_LAYOUT!r}"
            )

    def store_affine(self, grid, voxel_size: float) -> np.ndarray:
        """The store grid's voxel → MNI world affine (4×4) in this layout's voxel order."""
        self.check(grid, voxel_size)
        if self.origin_mm is None:
            from swiftlib.data.geometry import store_affine

            return store_affine(grid, voxel_size)
        aff = np.eye(4)
        aff[:3, :3] = np.diag([_SIGN[c] * float(voxel_size) for c in self.axcodes])
        aff[:3, 3] = self.origin_mm
        return aff

    def to_dict(self) -> dict:
        return {"name": self.name, "axcodes": self.axcodes, "description": self.description}


_LAYOUTS: dict[str, Layout] = {}


def _register(layout: Layout) -> Layout:
    _LAYOUTS[layout.name] = layout
    return layout


_register(
    Layout(
        name="mni_ras",
        axcodes="RAS",
        description="RAS+ voxel order, grid centred on the MNI152 brain (swiftlib's default)",
    )
)
_register(
    Layout(
        name="swift_v1",
        axcodes="LAS",
        description=(
            "SwiFT v1's input: LAS voxel order, 96³ at 2 mm, the FSL 91×109×91 grid padded "
            "x 3|2, cropped y 7|6, padded z 3|2; v1's global z-score"
        ),
        grid=(96, 96, 96),
        voxel_size=2.0,
        origin_mm=(96.0, -112.0, -78.0),
        normalisation="zscore_global",
        arithmetic="swift_v1",
    )
)


def list_layouts() -> list[str]:
    """Names of the registered layouts."""
    return sorted(_LAYOUTS)


def get_layout(name: str) -> Layout:
    """The registered layout ``name``; unknown names fail with the allowed ones and a
    "did you mean"."""
    if isinstance(name, Layout):
        return name
    check_choice("layout", name, list_layouts())
    return _LAYOUTS[name]


def check_template(name: str) -> str:
    """``name`` if it is a known template identifier or ``unknown``; else ``ValueError``
    with the allowed names and a "did you mean"."""
    return check_choice("template", name, [UNKNOWN_TEMPLATE, *KNOWN_TEMPLATES])


def pad_crop(source_shape, offset, grid) -> tuple[tuple[int, int], ...]:
    """Per axis ``(before, after)`` voxels added to a source to make the store grid (negative
    = cropped), for a source on the store lattice at integer ``offset``
    (``source_ijk = store_ijk + offset``), both in the layout's voxel order."""
    out = []
    for n, o, g in zip(source_shape[:3], offset, grid):
        out.append((int(-o), int(g + o - n)))
    return tuple(out)
