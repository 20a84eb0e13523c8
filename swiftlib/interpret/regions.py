"""Attribution maps against regions: atlas summaries, the synthetic cohort's ground truth,
and the sanity checks that return numbers (DESIGN §8, ``make science``).

* :func:`summarise_by_region` tabulates any map by an atlas image (refused when it is on
  another grid or in another space, unless ``resample="nearest"`` is asked for).
* :func:`recovery_auroc` — voxel-wise AUROC of a map against the ground-truth mask of a
  label's planted regions (synthetic cohort), inside the brain mask: 1 = the map ranks
  every planted voxel above every other brain voxel, 0.5 = no preference.
* :func:`region_preference` — the planted regions against the cohort's other (unlabelled)
  network regions; a model trained on ``null_label`` should show none (≈ 0.5).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "AtlasError",
    "load_map",
    "summarise_by_region",
    "ground_truth",
    "ground_truth_mask",
    "recovery_auroc",
    "region_preference",
    "describe_sanity_checks",
]

log = logging.getLogger(__name__)


class AtlasError(ValueError):
    """An atlas or mask image does not fit the map it should summarise."""


def load_map(img):
    """A nibabel image from a path or an image (3D; a 4D image with one volume is squeezed)."""
    import nibabel as nib

    if isinstance(img, (str, Path)):
        if not Path(img).exists():
            raise FileNotFoundError(f"image {img} does not exist")
        img = nib.load(str(img))
    if not hasattr(img, "affine"):
        raise TypeError(f"expected a NIfTI image or a path, got {type(img).__name__}")
    if img.ndim == 4 and img.shape[3] == 1:
        img = nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine, img.header)
    if img.ndim != 3:
        raise AtlasError(f"image shape {img.shape}: expected a 3D map (X, Y, Z)")
    return img


def _space_code(img) -> int:
    s, q = int(img.header["sform_code"]), int(img.header["qform_code"])
    return s or q


def _conform(atlas, ref, resample: str | None, what: str):
    """``atlas`` on ``ref``'s grid: equal grids pass, others are refused or resampled."""
    from nilearn.image import resample_to_img

    ra, rr = _space_code(atlas), _space_code(ref)
    if ra == 1 and rr in (2, 3, 4, 5) or rr == 1 and ra in (2, 3, 4, 5):
        raise AtlasError(
            f"{what} is in scanner space (xform code 1) and the map in a template space (code "
            f"{max(ra, rr)}) or vice versa; register the atlas to MNI152 first (maps from swiftlib "
            "are MNI152)"
        )
    same = atlas.shape[:3] == ref.shape[:3] and np.allclose(atlas.affine, ref.affine, atol=1e-3)
    if same:
        return atlas
    if resample is None:
        raise AtlasError(
            f"{what} grid ({_describe_grid(atlas)}) differs from the map's "
            f"({_describe_grid(ref)}); "
            "pass resample='nearest' to resample the atlas onto the map grid (nearest neighbour "
            "keeps labels intact), or write the map on the atlas grid"
        )
    if resample != "nearest":
        raise ValueError(f"resample={resample!r}: expected None (refuse other grids) or 'nearest'")
    corners = np.array([[0, 0, 0], np.array(atlas.shape[:3]) - 1])
    a_world = corners @ atlas.affine[:3, :3].T + atlas.affine[:3, 3]
    r_corners = np.array([[0, 0, 0], np.array(ref.shape[:3]) - 1])
    r_world = r_corners @ ref.affine[:3, :3].T + ref.affine[:3, 3]
    lo_a, hi_a = a_world.min(0), a_world.max(0)
    lo_r, hi_r = r_world.min(0), r_world.max(0)
    if np.any(hi_a < lo_r) or np.any(hi_r < lo_a):
        raise AtlasError(
            f"{what} does not overlap the map in world space (bounding boxes "
            f"{lo_a.round(0).tolist()}–{hi_a.round(0).tolist()} vs "
            f"{lo_r.round(0).tolist()}–{hi_r.round(0).tolist()} mm); is it in another space?"
        )
    log.info("resampling %s onto the map grid (nearest neighbour)", what)
    return resample_to_img(
        atlas, ref, interpolation="nearest", force_resample=True, copy_header=True
    )


def _describe_grid(img) -> str:
    voxel = np.round(np.abs(np.diag(img.affine)[:3]), 2).tolist()
    origin = np.round(img.affine[:3, 3], 1).tolist()
    return f"shape {img.shape[:3]}, voxel {voxel} mm, origin {origin}"


def summarise_by_region(
    map_img, atlas_img, labels: dict | None = None, mask_img=None, resample: str | None = None
):
    """Attribution per atlas region, on magnitudes.

    Args:
        map_img: a 3D map (NIfTI image or path), e.g. ``Attributions.to_nifti()``.
        atlas_img: an integer label image (0 = background) on the map's grid, or a
            ``{name: mask image}`` dict (e.g. :func:`ground_truth` regions).
        labels: ``{int value: name}`` for a label image (default: ``region_<value>``).
        mask_img: brain mask; the "brain" reference is the mask (default: non-zero map voxels).
        resample: ``None`` refuses an atlas on another grid (:class:`AtlasError`);
            ``"nearest"`` resamples it onto the map grid with nearest-neighbour interpolation.

    Returns:
        DataFrame ``region, num_voxels, mean, mean_abs, share, ratio_to_brain, auroc`` sorted
        by ``ratio_to_brain``. ``mean`` is the signed mean; the scores use magnitudes,
        because a *signed* map's brain-wide mean is near zero (positive and negative voxels
        cancel) and a ratio to it explodes for noise. ``ratio_to_brain`` = region mean
        |value| ÷ brain mean |value| (above 1: the map is stronger there than on average);
        ``auroc`` ranks the region's voxels against the rest of the brain by |value| (0.5 =
        no preference, 1 = every region voxel above every other); ``share`` = the region's
        fraction of the brain's total |value|. A flat map (noise, or a model that learned
        nothing) gives every region ≈ 1 and ≈ 0.5.
    """
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    ref = load_map(map_img)
    data = np.asarray(ref.dataobj, dtype=np.float64)
    if mask_img is not None:
        mask = _conform(load_map(mask_img), ref, resample, "mask image")
        brain = np.asarray(mask.dataobj) > 0
    else:
        brain = data != 0
    if not brain.any():
        raise ValueError(
            "the brain mask (or the map's non-zero voxels) is empty; nothing to summarise"
        )
    if isinstance(atlas_img, dict):
        regions = {
            name: np.asarray(_conform(load_map(m), ref, resample, f"region {name!r}").dataobj) > 0
            for name, m in atlas_img.items()
        }
    else:
        atlas = np.asarray(_conform(load_map(atlas_img), ref, resample, "atlas image").dataobj)
        if not np.allclose(atlas, np.round(atlas)):
            raise AtlasError(
                "atlas image holds non-integer values; expected a label image "
                "(0 = background, 1, 2, …) or pass a {name: mask} dict"
            )
        values = [int(v) for v in np.unique(atlas) if v != 0]
        labels = labels or {}
        regions = {labels.get(v, f"region_{v}"): atlas == v for v in values}
    magnitude = np.abs(data)
    total, brain_mean = magnitude[brain].sum(), magnitude[brain].mean()
    nan = float("nan")
    rows = []
    for name, m in regions.items():
        m = m & brain
        n = int(m.sum())
        rest = brain & ~m
        auroc = nan
        if n and rest.any():
            auroc = float(
                roc_auc_score(
                    np.r_[np.ones(n), np.zeros(int(rest.sum()))],
                    np.r_[magnitude[m], magnitude[rest]],
                )
            )
        rows.append(
            {
                "region": name,
                "num_voxels": n,
                "mean": float(data[m].mean()) if n else nan,
                "mean_abs": float(magnitude[m].mean()) if n else nan,
                "share": float(magnitude[m].sum() / total) if total else nan,
                "ratio_to_brain": float(magnitude[m].mean() / brain_mean)
                if n and brain_mean
                else nan,
                "auroc": auroc,
            }
        )
    table = pd.DataFrame(rows).sort_values("ratio_to_brain", ascending=False, na_position="last")
    return table.reset_index(drop=True)


def ground_truth(store) -> dict:
    """The synthetic cohort's ``ground_truth.json`` plus loaded images: ``{"labels": …,
    "regions": {name: image}, "brain_mask": image}`` (source MNI grid)."""
    import nibabel as nib

    from swiftlib.utils.io import read_json

    root = Path(getattr(store, "root", store)) / "ground_truth"
    if not (root / "ground_truth.json").is_file():
        raise FileNotFoundError(
            f"{root}/ground_truth.json is missing; ground truth exists only "
            "for the synthetic cohort (swiftlib synth)"
        )
    info = read_json(root / "ground_truth.json")
    regions = {name: nib.load(str(root / r["file"])) for name, r in info["regions"].items()}
    brain_mask = nib.load(str(root / info["brain_mask"]))
    return {"labels": info["labels"], "regions": regions, "brain_mask": brain_mask, "info": info}


def ground_truth_mask(store, label: str) -> np.ndarray:
    """Union of the regions that drive ``label`` on the source grid, bool ``(X, Y, Z)``
    (empty for ``null_label``)."""
    gt = ground_truth(store)
    if label not in gt["labels"]:
        raise ValueError(f"label {label!r} has no ground truth; known: {sorted(gt['labels'])}")
    shape = gt["brain_mask"].shape
    mask = np.zeros(shape, dtype=bool)
    for name in gt["labels"][label]["regions"]:
        mask |= np.asarray(gt["regions"][name].dataobj) > 0
    return mask


def _as_source_array(map_img, store):
    gt = ground_truth(store)
    img = load_map(map_img) if not isinstance(map_img, np.ndarray) else None
    if img is not None:
        img = _conform(img, gt["brain_mask"], None, "attribution map")
        data = np.asarray(img.dataobj, dtype=np.float64)
    else:
        data = np.asarray(map_img, dtype=np.float64)
        if data.shape != gt["brain_mask"].shape:
            raise AtlasError(
                f"map shape {data.shape}; expected the ground truth's source grid "
                f"{gt['brain_mask'].shape} (use Attributions.to_nifti(space='source'))"
            )
    return data, np.asarray(gt["brain_mask"].dataobj) > 0, gt


def recovery_auroc(map_img, store, label: str) -> float:
    """Voxel-wise AUROC of a source-grid map (image or array) against ``label``'s planted
    regions, over the brain mask (1 = perfect ranking, 0.5 = chance)."""
    from sklearn.metrics import roc_auc_score

    data, brain, _ = _as_source_array(map_img, store)
    truth = ground_truth_mask(store, label)
    if not truth[brain].any():
        raise ValueError(
            f"label {label!r} has no planted region inside the brain mask "
            "(e.g. null_label); use region_preference() for negative controls"
        )
    return float(roc_auc_score(truth[brain], data[brain]))


def region_preference(map_img, store, labels: Sequence[str] = ("sex", "age")) -> float:
    """AUROC of the map for the planted regions of ``labels`` against the cohort's other
    (unlabelled, "background") network regions: ≈ 0.5 = no preference for planted regions.
    Both sets carry signal in the data, so this is fair to a model that merely tracks
    fluctuation; a ``null_label`` model should stay near 0.5."""
    from sklearn.metrics import roc_auc_score

    data, brain, gt = _as_source_array(map_img, store)
    planted = np.zeros_like(brain)
    for lab in labels:
        planted |= ground_truth_mask(store, lab)
    other = np.zeros_like(brain)
    for name, r in gt["info"]["regions"].items():
        if r.get("drives") is None:
            other |= np.asarray(gt["regions"][name].dataobj) > 0
    other &= ~planted
    sel = (planted | other) & brain
    return float(roc_auc_score(planted[sel], data[sel]))


def describe_sanity_checks(checks: dict, label: str, good: float = 0.8, flat: float = 0.6) -> str:
    """The attribution sanity checks as sentences a newcomer understands.

    ``checks``: ``trained_auroc``, ``randomised_auroc`` (:func:`recovery_auroc` of the trained
    and the randomised model's maps) and ``trained_preference``, or ``planted_preference``
    alone for a label without planted regions. ``good`` / ``flat``: the AUROC above which a
    map "recovers" the planted regions and at or below which it is "flat" (no preference).
    """
    from swiftlib.viz.text import format_score

    if not checks:
        return "The sanity checks were not run (sanity_checks=False)."
    if "planted_preference" in checks:
        pref = checks["planted_preference"]
        verdict = (
            "no preference, as expected for a label that nothing in the data drives"
            if abs(pref - 0.5) <= 0.1
            else "a preference although nothing in the data drives the label: the map shows "
            "where the signal is strong, not what predicts the label"
        )
        return (
            f"`{label}` has no planted region; the map's preference for the planted over the "
            f"other network regions is {format_score(pref)} (0.5 = none): {verdict}."
        )
    tr, rnd = checks["trained_auroc"], checks["randomised_auroc"]
    trs = f"voxel AUROC {format_score(tr)}; 1 = every planted voxel ranks first, 0.5 = none"
    found, random_flat = tr >= good, rnd <= flat
    if found and random_flat:
        return (
            f"The map points at `{label}`'s planted regions ({trs}) and a "
            f"randomised copy of the model's does not ({format_score(rnd)}): the randomised "
            "model's map is flat, so the map depends on what the model learned."
        )
    if found:
        return (
            f"The map points at `{label}`'s planted regions ({trs}), but "
            f"so does a randomised model's ({format_score(rnd)}): the map follows the input "
            "(where the signal is strong), not what the model learned. Try a gradient method "
            "(method='smoothgrad' or 'saliency', docs/interpret.md)."
        )
    if tr <= flat:
        return (
            f"The map does not point at `{label}`'s planted regions ({trs}; "
            f"randomised model {format_score(rnd)}): it is flat. A map can only show "
            "what the model knows; when the model has not learned the label (check its test "
            "AUROC in the evaluate notebook) this is the expected, honest result."
        )
    return (
        f"The map leans towards `{label}`'s planted regions ({trs}; "
        f"randomised model {format_score(rnd)}), but weakly: more subjects or windows, or a "
        "better-trained model, would sharpen it."
    )
