"""Input layouts (swiftlib.data.layouts): the ``swift_v1`` layout reproduces SwiFT v1's input
bit for bit, voxel order never mirrors a brain, maps go back onto the source file's grid, and
layout/template flow into the store and checkpoint contracts.

The reference below re-implements SwiFT v1's steps as read in its public code
(Transconnectome/SwiFT, ``preprocessing.py`` and the UK Biobank branch of ``datasets.py``,
the one written for the MNI 91×109×91 2 mm grid): load the NIfTI without reorienting;
background = every value equal to 0; z-score with torch's float32 mean and (unbiased) std
over the other values; background ← the minimum z; fp16; then per window pad x by 3|2, crop
y by 7|6, pad z by 3|2 with the window's first value.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from swiftlib.data.geometry import StoreGeometry
from swiftlib.data.layouts import KNOWN_TEMPLATES, get_layout, list_layouts, pad_crop
from swiftlib.data.preprocess import (
    PreprocessConfig,
    PreprocessError,
    discover_inputs,
    preprocess,
    read_template,
)
from swiftlib.data.store import StoreError, StoreWriter, open_store

FSL_SHAPE = (91, 109, 91)  # MNI152NLin6Asym 2 mm, FSL/HCP voxel order (LAS)
T = 7


def _fsl_affine() -> np.ndarray:
    aff = np.diag([-2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = (90.0, -126.0, -72.0)
    return aff


def _world(shape, aff):
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    return ijk @ aff[:3, :3].T + aff[:3, 3]  # (X, Y, Z, 3) mm


def _las_image(seed=0) -> np.ndarray:
    """A brain-masked 91×109×91×T image in LAS order: an ellipsoidal 'brain' (zeros outside)
    with smooth positive intensities, a bright left-hemisphere blob at x = −40 mm (so a
    mirror shows), noise over time and a few in-brain values that are exactly 0 in one
    frame (v1 treats those as background)."""
    rng = np.random.default_rng(seed)
    w = _world(FSL_SHAPE, _fsl_affine())
    x, y, z = w[..., 0], w[..., 1], w[..., 2]
    brain = (x / 68) ** 2 + ((y + 18) / 88) ** 2 + ((z - 16) / 66) ** 2 <= 1.0
    base = (
        800.0 + 3.0 * y + 2.0 * z + 400.0 * np.exp(-((x + 40) ** 2 + y**2 + (z - 20) ** 2) / 200.0)
    )
    data = base[..., None] * (1.0 + 0.05 * rng.standard_normal(FSL_SHAPE + (T,)))
    data = np.where(brain[..., None], data, 0.0).astype(np.float32)
    inside = np.argwhere(brain)
    for i, j, k in inside[rng.choice(len(inside), 25, replace=False)]:
        data[i, j, k, rng.integers(T)] = 0.0
    return data


def _save(data, aff, path, name_template=True):
    img = nib.Nifti1Image(data, aff)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 0.72
    img.set_sform(aff, code=4)
    img.set_qform(aff, code=4)
    nib.save(img, path)
    return path


def _ras_copy(data, aff):
    """The same image written in RAS order (x flipped, affine adjusted): same brain."""
    ras = np.ascontiguousarray(data[::-1])
    a = aff.copy()
    a[0, 0] = -aff[0, 0]
    a[0, 3] = aff[0, 3] + aff[0, 0] * (data.shape[0] - 1)
    return ras, a


def swift_v1_reference(path) -> np.ndarray:
    """SwiFT v1's input for one scan, its steps re-expressed here: (96, 96, 96, T) fp16."""
    img = nib.load(str(path))
    # file order, no reorientation
    data = torch.from_numpy(np.asanyarray(img.dataobj).astype(np.float32))
    background = data == 0  # element-wise, space and time
    brain_values = data[~background]
    z = (data - brain_values.mean()) / brain_values.std()
    volume = torch.empty(data.shape)
    volume[background] = z[~background].min()
    volume[~background] = z[~background]
    volume = volume.to(torch.float16)
    window = torch.cat(
        [volume[..., t : t + 1].unsqueeze(0) for t in range(data.shape[3])], dim=4
    )  # (1, X, Y, Z, T)
    pad_value = window.flatten()[0]
    window = torch.nn.functional.pad(
        window.permute(0, 4, 1, 2, 3), (3, 2, -7, -6, 3, 2), value=pad_value
    )
    return window.permute(0, 2, 3, 4, 1)[0].numpy()  # (96, 96, 96, T)


@pytest.fixture(scope="module")
def las_ras_inputs(tmp_path_factory):
    """A folder with one scan twice: LAS (FSL order) and RAS copies."""
    root = tmp_path_factory.mktemp("layouts") / "in"
    root.mkdir()
    data = _las_image()
    _save(data, _fsl_affine(), root / "las.nii.gz")
    _save(*_ras_copy(data, _fsl_affine()), root / "ras.nii.gz")
    return root, data


@pytest.fixture(scope="module")
def stores(las_ras_inputs, tmp_path_factory):
    """{layout: store} of the LAS and RAS copies, preprocessed once per layout."""
    root, _ = las_ras_inputs
    out = {}
    for name in list_layouts():
        dest = tmp_path_factory.mktemp(name) / "store"
        report = preprocess(
            root,
            dest,
            config=PreprocessConfig(layout=name, template="MNI152NLin6Asym", min_frames=T),
            progress=False,
        )
        assert report.ok, report.failed
        out[name] = open_store(dest)
    return out


def test_swift_v1_layout_equals_swift_v1_preprocessing_bit_for_bit(stores, las_ras_inputs):
    root, _ = las_ras_inputs
    store = stores["swift_v1"]
    ref = swift_v1_reference(root / "las.nii.gz")
    got = store.read_subject("las")
    assert got.dtype == np.float16 and got.shape == (96, 96, 96, T)
    assert np.array_equal(got, ref)
    assert store.norm_stats("las")["zero_values_in_mask"] == 25  # v1's element-wise background


def test_ras_and_las_copies_give_one_store_per_layout_never_mirrored(stores):
    left_blob = np.array([[-40.0, 0.0, 20.0]])  # world mm, left hemisphere
    for name, store in stores.items():
        assert np.array_equal(store.read_subject("las"), store.read_subject("ras")), name
        assert np.array_equal(store.mask("las"), store.mask("ras")), name
        geom = store.geometry("las")
        ijk = np.round(np.linalg.solve(geom.affine_array, np.r_[left_blob[0], 1.0])[:3]).astype(int)
        mean = store.read_subject("las").astype(np.float32).mean(-1)
        mirrored = (geom.grid[0] - 1 - ijk[0], ijk[1], ijk[2])
        assert mean[tuple(ijk)] > mean[mirrored] + 1.0, name  # the bright blob stays on the left
    # voxel orders: mni_ras runs towards the right, swift_v1 (as v1) towards the left
    assert (
        stores["mni_ras"].geometry("las").axcodes == "RAS"
        and stores["swift_v1"].geometry("ras").axcodes == "LAS"
    )
    assert stores["swift_v1"].geometry("las").source_axcodes is None  # LAS file: not reoriented
    assert stores["swift_v1"].geometry("ras").source_axcodes == "RAS"


def test_swift_v1_is_the_default_layout_mirrored_and_shifted(stores):
    """Today's default (mni_ras) is v1's input mirrored in x and shifted 7 voxels in z: v1's
    voxel (i, j, k) is mni_ras's (96 − i, j, k + 7)."""
    v1 = stores["swift_v1"].read_subject("las")[1:, :, :-7].astype(np.float32)
    ras = stores["mni_ras"].read_subject("las")[1:][::-1][:, :, 7:].astype(np.float32)
    v1_mask = stores["swift_v1"].mask("las")[1:, :, :-7]
    ras_mask = stores["mni_ras"].mask("las")[1:][::-1][:, :, 7:]
    assert v1_mask.sum() > 10_000 and np.array_equal(v1_mask, ras_mask)
    assert np.corrcoef(v1[v1_mask].ravel(), ras[ras_mask].ravel())[0, 1] > 0.999


def test_default_layout_keeps_the_mni_ras_behaviour(stores):
    store = stores["mni_ras"]
    assert store.layout == "mni_ras" and store.manifest["axcodes"] == "RAS"
    from swiftlib.data.geometry import store_affine

    assert np.allclose(store.affine, store_affine((96, 96, 96), 2.0))
    assert store.norm_stats("las").get("arithmetic") is None  # swiftlib's arithmetic, unchanged


def test_maps_go_back_onto_each_source_file_grid_exactly(stores, las_ras_inputs):
    root, _ = las_ras_inputs
    for name, store in stores.items():
        for sid in ("las", "ras"):
            src = nib.load(str(root / f"{sid}.nii.gz"))
            brain = np.any(np.asanyarray(src.dataobj) != 0, axis=3)
            geom = store.geometry(sid)
            assert geom.file_shape == src.shape[:3] and np.allclose(geom.file_affine, src.affine)
            back = geom.to_nifti(store.mask(sid).astype(np.float32), space="source")
            assert back.shape == src.shape[:3] and np.allclose(back.affine, src.affine), (name, sid)
            assert np.array_equal(np.asarray(back.dataobj) > 0, brain), (name, sid)
            assert StoreGeometry.from_dict(geom.to_dict()) == geom


def test_layout_and_template_are_recorded_and_in_the_contract(stores):
    store = stores["swift_v1"]
    c = store.contract()
    assert (
        c["layout"] == "swift_v1"
        and c["template"] == "MNI152NLin6Asym"
        and c["grid"] == [96, 96, 96]
    )
    assert store.summary()["layout"] == "swift_v1"
    man = json.loads((store.root / "manifest.json").read_text())
    assert man["axcodes"] == "LAS" and man["template"] == "MNI152NLin6Asym"
    assert np.allclose(store.affine[:3, 3], (96, -112, -78)) and store.affine[0, 0] == -2.0


def test_swift_v1_pad_crop_on_the_fsl_grid():
    layout = get_layout("swift_v1")
    aff = layout.store_affine((96, 96, 96), 2.0)
    geom = StoreGeometry.build((96, 96, 96), 2.0, aff, FSL_SHAPE, _fsl_affine())
    assert geom.offset == (-3, 7, -3)
    assert pad_crop(FSL_SHAPE, geom.offset, geom.grid) == ((3, 2), (-7, -6), (3, 2))


# -- templates ---------------------------------------------------------------------------------
def test_template_from_bids_name_or_sidecar(tmp_path):
    p = tmp_path / "sub-01_task-rest_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz"
    assert read_template(p) == "MNI152NLin2009cAsym"
    assert read_template(tmp_path / "sub-01_space-MNI152NLin6Asym_bold.nii.gz") == "MNI152NLin6Asym"
    assert read_template(tmp_path / "sub-01_space-T1w_bold.nii.gz") == "unknown"
    url = "https://templateflow.s3.amazonaws.com/tpl-MNI152NLin6Asym/tpl-MNI152NLin6Asym_res-02_T1w.nii.gz"
    for i, (ref, want) in enumerate(
        [
            ("MNI152NLin6Asym", "MNI152NLin6Asym"),
            (url, "MNI152NLin6Asym"),
            ({"URI": "tpl-MNI152NLin2009cAsym"}, "MNI152NLin2009cAsym"),
            ("MNI152NLin6AsymX", "unknown"),
        ]
    ):
        side = tmp_path / f"s{i}.json"
        side.write_text(json.dumps({"SpatialReference": ref}))
        assert read_template(tmp_path / "plain.nii.gz", side) == want, ref
    assert read_template(tmp_path / "plain.nii.gz") == "unknown"


def _bids(root, spaces, subjects=("01", "02")):
    (root).mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "t", "BIDSVersion": "1.8.0"})
    )
    data = np.random.default_rng(0).normal(1000, 10, (10, 12, 11, 20)).astype(np.float32)
    aff = np.diag([4.0, 4.0, 4.0, 1.0])
    for sub in subjects:
        func = root / f"sub-{sub}" / "func"
        func.mkdir(parents=True)
        for space in spaces:
            _save(data, aff, func / f"sub-{sub}_task-rest_space-{space}_desc-preproc_bold.nii.gz")
    return root


def test_several_templates_are_refused_or_chosen_before_anything_is_written(tmp_path):
    root = _bids(tmp_path / "bids", ["MNI152NLin6Asym", "MNI152NLin2009cAsym"])
    with pytest.raises(
        PreprocessError, match=r"several templates .*MNI152NLin2009cAsym.*--template"
    ):
        preprocess(
            root,
            tmp_path / "out",
            config=PreprocessConfig(voxel_size=4.0, grid=(12, 14, 12)),
            progress=False,
        )
    assert not (tmp_path / "out").exists()
    scans = discover_inputs(root, template="MNI152NLin6Asym")
    assert [s.template for s in scans] == ["MNI152NLin6Asym"] * 2
    assert all("space-MNI152NLin6Asym" in s.path for s in scans)


def test_a_declared_template_fills_in_and_refuses_contradictions(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    data = np.random.default_rng(0).normal(1000, 10, (10, 12, 11, 20)).astype(np.float32)
    _save(data, np.diag([4.0, 4.0, 4.0, 1.0]), flat / "a.nii.gz")
    assert discover_inputs(flat)[0].template == "unknown"
    assert discover_inputs(flat, template="MNI152NLin6Asym")[0].template == "MNI152NLin6Asym"
    _save(data, np.diag([4.0, 4.0, 4.0, 1.0]), flat / "b_space-MNI152NLin2009cAsym_bold.nii.gz")
    with pytest.raises(
        PreprocessError,
        match=r"b_space-MNI152NLin2009cAsym_bold.nii.gz: is in template "
        r"MNI152NLin2009cAsym .* template='MNI152NLin6Asym'",
    ):
        discover_inputs(flat, template="MNI152NLin6Asym")


# -- bad settings --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw, match",
    [
        (
            {"layout": "swift_v2"},
            r"layout='swift_v2': expected one of \['mni_ras', 'swift_v1'\] \(did you mean "
            r"'swift_v1'\?\)",
        ),
        (
            {"layout": "swift_v1", "voxel_size": 4.0, "grid": (48, 48, 48)},
            r"layout 'swift_v1' .* not defined for grid=\(48, 48, 48\) \(it needs \(96, 96, "
            r"96\)\), voxel_size=4 mm",
        ),
        (
            {"layout": "swift_v1", "normalisation": "psc"},
            r"normalisation='psc' \(it needs 'zscore_global'\)",
        ),
        (
            {"template": "MNI152NLin6asym"},
            r"template='MNI152NLin6asym'.*did you mean 'MNI152NLin6Asym'",
        ),
    ],
)
def test_bad_layout_or_template_settings(kw, match):
    with pytest.raises(PreprocessError, match=match):
        PreprocessConfig(**kw)


def test_unknown_layout_on_the_command_line_writes_nothing(tmp_path, las_ras_inputs, capsys):
    from swiftlib.cli import main

    root, _ = las_ras_inputs
    out = tmp_path / "never"
    assert main(["preprocess", str(root), "--out", str(out), "--layout", "swiftv1", "-q"]) == 2
    err = capsys.readouterr().err
    assert (
        "swiftlib preprocess: error: layout='swiftv1'" in err and "did you mean 'swift_v1'" in err
    )
    assert not out.exists()


def test_a_store_keeps_one_layout_and_template(stores, las_ras_inputs, tmp_path):
    root, _ = las_ras_inputs
    existing = stores["mni_ras"].root
    with pytest.raises(
        PreprocessError,
        match=r"existing store has layout='mni_ras' but this run asks for 'swift_v1'",
    ):
        preprocess(
            root,
            existing,
            config=PreprocessConfig(layout="swift_v1", template="MNI152NLin6Asym", min_frames=T),
            progress=False,
        )
    with pytest.raises(
        PreprocessError,
        match=r"existing store has template='MNI152NLin6Asym' .* 'MNI152NLin2009cAsym'",
    ):
        preprocess(
            root,
            existing,
            config=PreprocessConfig(template="MNI152NLin2009cAsym", min_frames=T),
            progress=False,
        )
    # an interrupted store (no manifest yet) is checked through its written subjects
    import shutil

    interrupted = tmp_path / "interrupted"
    shutil.copytree(existing, interrupted)
    (interrupted / "manifest.json").unlink()
    with pytest.raises(
        PreprocessError,
        match=r"existing store has layout='mni_ras' but this run asks for 'swift_v1'",
    ):
        preprocess(
            root,
            interrupted,
            config=PreprocessConfig(layout="swift_v1", min_frames=T),
            progress=False,
        )
    # a store written before templates were recorded takes this run's
    old = tmp_path / "old"
    shutil.copytree(existing, old)
    man = json.loads((old / "manifest.json").read_text())
    for key in ("layout", "axcodes", "template"):
        man.pop(key)
    (old / "manifest.json").write_text(json.dumps(man))
    report = preprocess(
        root, old, config=PreprocessConfig(template="MNI152NLin6Asym", min_frames=T), progress=False
    )
    assert (
        report.ok
        and report.skipped == ["las", "ras"]
        and open_store(old).template == "MNI152NLin6Asym"
    )
    with pytest.raises(StoreError, match="did you mean 'swift_v1'"):
        StoreWriter(tmp_path / "w", (4, 5, 6), 2.0, np.eye(4), layout="swift-v1")
    assert set(KNOWN_TEMPLATES) >= {"MNI152NLin6Asym", "MNI152NLin2009cAsym"}


# -- the contract: checkpoints meet stores -----------------------------------------------------
def _v1_checkpoint(path):
    """A public-SwiFT-v1-style Lightning checkpoint (no swiftlib metadata): the patch
    embedding under v1's name (``model.patch_embed.fc``)."""
    import swiftlib

    enc = swiftlib.create_model("swift_v1_test", num_classes=0)
    sd = {
        f"model.patch_embed.fc.{k.rsplit('.', 1)[1]}": v
        for k, v in enc.state_dict().items()
        if k.startswith("patch_embed.proj.")
    }
    torch.save({"state_dict": sd, "epoch": 1}, path)
    return path


def test_a_swift_v1_checkpoint_needs_the_swift_v1_layout(stores, tmp_path):
    import swiftlib
    from swiftlib.tasks import ContractError, FinetuneConfig, FinetuneTask
    from swiftlib.tasks.common import load_encoder_weights

    ckpt = _v1_checkpoint(tmp_path / "v1.ckpt")
    enc = swiftlib.create_model("swift_v1_test", num_classes=0)
    with pytest.raises(
        ContractError,
        match=r"SwiFT v1 checkpoint.*layout 'mni_ras'.*mirrored.*"
        r"`swiftlib preprocess --layout swift_v1`",
    ):
        load_encoder_weights(enc, ckpt, "swift_v1_test", {}, stores["mni_ras"].contract())
    report = load_encoder_weights(enc, ckpt, "swift_v1_test", {}, stores["swift_v1"].contract())
    assert report["loaded"] == ["patch_embed.proj.bias", "patch_embed.proj.weight"]
    # the fine-tuning task refuses it too, before any training
    cfg = FinetuneConfig(
        model="swift_v1_test", init_from=str(ckpt), contract=stores["mni_ras"].contract()
    )
    with pytest.raises(ContractError, match="--layout swift_v1"):
        FinetuneTask(cfg)


def test_a_swift_v1_checkpoint_warns_on_another_template(stores, tmp_path):
    import swiftlib
    from swiftlib.tasks import ContractError
    from swiftlib.tasks.common import TemplateMismatchWarning, load_encoder_weights

    ckpt = _v1_checkpoint(tmp_path / "v1.ckpt")
    enc = swiftlib.create_model("swift_v1_test", num_classes=0)
    contract = {**stores["swift_v1"].contract(), "template": "MNI152NLin2009cAsym"}
    with pytest.warns(
        TemplateMismatchWarning, match="trained on 'MNI152NLin6Asym'.*'MNI152NLin2009cAsym'"
    ):
        load_encoder_weights(enc, ckpt, "swift_v1_test", {}, contract)
    with pytest.raises(ContractError, match="--template MNI152NLin6Asym"):
        load_encoder_weights(enc, ckpt, "swift_v1_test", {}, contract, template_mismatch="error")


def test_layout_and_template_in_the_checkpoint_contract(stores):
    import warnings

    from swiftlib.tasks.common import ContractError, TemplateMismatchWarning, check_contract

    v1, ras = stores["swift_v1"].contract(), stores["mni_ras"].contract()
    check_contract(v1, v1)
    with pytest.raises(
        ContractError,
        match=r"layout: checkpoint expects 'swift_v1', store x has 'mni_ras'.*"
        r"swiftlib preprocess --layout swift_v1\)",
    ):
        check_contract(v1, ras, what="store x")
    # a checkpoint before layouts
    old = {k: v for k, v in ras.items() if k not in ("layout", "template")}
    check_contract(old, ras)
    with pytest.raises(ContractError, match="checkpoint expects 'mni_ras'"):
        check_contract(old, v1)  # its data were mni_ras: a swift_v1 store would be mirrored
    other = {**ras, "template": "MNI152NLin2009cAsym"}
    with pytest.warns(
        TemplateMismatchWarning,
        match="template: checkpoint trained on 'MNI152NLin6Asym', data is in",
    ):
        check_contract(ras, other)
    with pytest.raises(ContractError, match="template: .*--template MNI152NLin6Asym"):
        check_contract(ras, other, template_mismatch="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_contract(ras, other, template_mismatch="ignore")
        # cannot be checked
        check_contract(ras, {**ras, "template": "unknown"}, template_mismatch="error")
    with pytest.raises(ValueError, match="template_mismatch='erorr'.*did you mean 'error'"):
        check_contract(ras, other, template_mismatch="erorr")


# -- attribution maps, whatever the layout ------------------------------------------------------
def _attributions(group_map, geometry):
    import pandas as pd

    from swiftlib.interpret.maps import Attributions

    curves = pd.DataFrame({"subject_id": ["s"], "window_start": [0], "frame": [0], "value": [0.0]})
    return Attributions(
        {"s": group_map},
        {0: group_map},
        group_map,
        curves,
        {"s": 0},
        {"s": 0.5},
        group_map != 0,
        geometry,
    )


def test_attribution_maps_go_back_to_the_source_grid_for_every_layout(
    stores, las_ras_inputs, tmp_path
):
    root, _ = las_ras_inputs
    for name, store in stores.items():
        for sid in ("las", "ras"):
            src = nib.load(str(root / f"{sid}.nii.gz"))
            planted = np.zeros(src.shape[:3], np.float32)
            planted[30, 40, 50] = 7.0  # a file voxel inside the brain box
            geom = store.geometry(sid)
            world = src.affine @ np.array([30, 40, 50, 1.0])
            store_ijk = np.round(np.linalg.solve(geom.affine_array, world)[:3]).astype(int)
            group = np.zeros(geom.grid, np.float32)
            group[tuple(store_ijk)] = 7.0
            att = _attributions(group, geom)
            img = att.to_nifti(space="source")
            assert np.allclose(img.affine, src.affine) and np.array_equal(
                np.asarray(img.dataobj), planted
            ), (name, sid)
            assert (
                int(img.header["sform_code"]) == 4 and b"exact" in img.header["descrip"].tobytes()
            )
            store_img = att.to_nifti(space="store")
            assert np.allclose(store_img.affine, store.affine) and store_img.shape == (96, 96, 96)
    written = att.save(tmp_path / "maps", space="store")
    info = json.loads(written["space"].read_text())
    assert (
        info["space"] == "store"
        and "store grid [96, 96, 96]" in info["note"]
        and "LAS" in info["note"]
    )


def test_attribution_maps_of_resampled_inputs_store_space_with_a_note_or_resampled(tmp_path):
    """Subjects resampled onto the store grid (3 mm sources, origin off the 4 mm lattice):
    space='store' writes the store-grid MNI map with a note; space='source' resamples it back
    onto the source grid with nilearn."""
    from swiftlib.data.geometry import store_affine

    src_aff = np.diag([3.0, 3.0, 3.0, 1.0])
    src_aff[:3, 3] = (-91, -127, -73)
    grid = (20, 24, 22)
    geom = StoreGeometry.build(
        grid, 4.0, store_affine(grid, 4.0, (0, -17, 5)), (61, 73, 61), src_aff
    )
    assert geom.resampled
    ramp = np.broadcast_to(np.arange(grid[2], dtype=np.float32), grid).copy()  # increases with z
    att = _attributions(ramp, geom)
    store_written = att.save(tmp_path / "store", space="store")
    store_img = nib.load(store_written["group"])
    assert store_img.shape == grid and np.array_equal(store_img.get_fdata(dtype=np.float32), ramp)
    note = json.loads(store_written["space"].read_text())
    assert note["resampled_inputs"] and "space='source' resamples" in note["note"]
    src_written = att.save(tmp_path / "source", space="source", subjects=True)
    img = nib.load(src_written["s"])
    assert img.shape == (61, 73, 61) and np.allclose(img.affine, src_aff)
    assert b"resampled" in img.header["descrip"].tobytes()
    centre = np.array([30, 36, 30])
    assert np.asarray(img.dataobj)[tuple(centre)] == pytest.approx(
        geom.source_to_store(centre)[0, 2], abs=1e-3
    )
    assert json.loads(src_written["space"].read_text())["interpolation"] == "continuous"
