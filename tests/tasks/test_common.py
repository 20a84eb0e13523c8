import pytest
import torch

import swiftlib
from swiftlib.tasks.common import (
    CHECKPOINT_KEY,
    CheckpointError,
    ContractError,
    check_contract,
    load_encoder_weights,
    read_checkpoint,
)

CONTRACT = {
    "grid": [20, 24, 28],
    "voxel_size": 8.0,
    "space": "MNI152",
    "normalisation": "zscore_global",
    "tr_range": [1.0, 1.0],
}


def test_contract_refusal_names_the_field():
    check_contract(CONTRACT, dict(CONTRACT))
    check_contract(None, {"grid": [1, 2, 3]})  # no contract recorded: nothing to check
    with pytest.raises(
        ContractError, match=r"grid: checkpoint expects \[20, 24, 28\], data has \[96, 96, 96\]"
    ):
        check_contract(CONTRACT, {**CONTRACT, "grid": [96, 96, 96]})
    with pytest.raises(
        ContractError, match="normalisation: checkpoint expects 'zscore_global'.*'zscore_voxel'"
    ):
        check_contract(CONTRACT, {**CONTRACT, "normalisation": "zscore_voxel"})
    with pytest.raises(
        ContractError, match="tr_range: checkpoint trained on TR 1–1 s, data has 2–3 s"
    ):
        check_contract(CONTRACT, {**CONTRACT, "tr_range": [2.0, 3.0]})
    check_contract(CONTRACT, {**CONTRACT, "tr_range": [1.05, 1.05]})  # within 10 %


def test_read_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "none.ckpt")
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable weights-only torch checkpoint"):
        read_checkpoint(tmp_path / "junk.ckpt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list"):
        read_checkpoint(tmp_path / "list.pt")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"state_dict": {}, "x": _Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="weights-only"):
        read_checkpoint(tmp_path / "evil.ckpt")


def _pretrain_ckpt(tmp_path, model="swift_v2_test", overrides=None, contract=CONTRACT):
    enc = swiftlib.create_model(model, num_classes=0, **(overrides or {}))
    torch.nn.init.constant_(next(enc.parameters()), 0.123)
    sd = {f"model.encoder.{k}": v for k, v in enc.state_dict().items()}
    sd["model.mask_token"] = torch.zeros(3)
    path = tmp_path / "pretrain.ckpt"
    torch.save(
        {
            "state_dict": sd,
            CHECKPOINT_KEY: {
                "kind": "pretrain",
                "model": model,
                "model_overrides": overrides or {},
                "contract": contract,
            },
        },
        path,
    )
    return path, enc


def test_load_encoder_from_a_pretraining_checkpoint(tmp_path):
    path, src = _pretrain_ckpt(tmp_path)
    dst = swiftlib.create_model("swift_v2_test", num_classes=0)
    report = load_encoder_weights(dst, path, "swift_v2_test", {}, CONTRACT)
    assert report["kind"] == "pretrain" and report["missing"] == []
    assert len(report["loaded"]) == len(src.state_dict())
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), k


def test_load_encoder_refuses_other_presets_contracts_and_foreign_files(tmp_path):
    path, _ = _pretrain_ckpt(tmp_path)
    dst = swiftlib.create_model("swift_v2_test", num_classes=0)
    with pytest.raises(
        CheckpointError,
        match=(
            r"made for model 'swift_v2_test' with options \{\}; this run builds "
            r"'swift_v2_factorized_test'"
        ),
    ):
        load_encoder_weights(
            swiftlib.create_model("swift_v2_factorized_test", num_classes=0),
            path,
            "swift_v2_factorized_test",
            {},
            CONTRACT,
        )
    with pytest.raises(CheckpointError, match="with options"):
        load_encoder_weights(dst, path, "swift_v2_test", {"drop_path_rate": 0.0}, CONTRACT)
    with pytest.raises(ContractError, match="voxel_size"):
        load_encoder_weights(dst, path, "swift_v2_test", {}, {**CONTRACT, "voxel_size": 2.0})
    torch.save({"state_dict": {"foo": torch.zeros(1)}}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match="not a swiftlib checkpoint"):
        load_encoder_weights(dst, tmp_path / "foreign.ckpt", "swift_v2_test")
    torch.save(
        {
            "state_dict": {"foo": torch.zeros(1)},
            CHECKPOINT_KEY: {"kind": "tune", "model": "swift_v2_test"},
        },
        tmp_path / "kind.ckpt",
    )
    with pytest.raises(CheckpointError, match="unknown checkpoint kind 'tune'"):
        load_encoder_weights(dst, tmp_path / "kind.ckpt", "swift_v2_test")


_TO_REF = [  # our SwiFT v1 names -> the public reference module names
    (r"^patch_embed\.proj\.", "patch_embed.fc."),
    (r"^stages\.(\d+)\.pos_embed\.(pos_embed|time_embed)$", r"pos_embeds.\1.\2"),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.", r"layers.\1.blocks.\2.mlp.linear1."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.", r"layers.\1.blocks.\2.mlp.linear2."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.", r"layers.\1.blocks.\2."),
    (r"^stages\.(\d+)\.downsample\.", r"layers.\1.downsample."),
]


def _reference_names(ours: dict) -> dict:
    import re

    out = {}
    for k, v in ours.items():
        for pat, rep in _TO_REF:
            new, n = re.subn(pat, rep, k)
            if n:
                k = new
                break
        out[k] = v
    return out


def test_swift_v1_lightning_checkpoint_loads_into_swift_v1(tmp_path):
    src = swiftlib.create_model("swift_v1_test", num_classes=0)
    ours = {k: v for k, v in src.state_dict().items()}
    path = tmp_path / "v1.ckpt"
    sd = {f"model.{k}": v for k, v in _reference_names(ours).items()}
    # the reference Lightning module's head: dropped
    sd["output_head.fc.weight"] = torch.zeros(2, 3)
    torch.save({"state_dict": sd, "epoch": 3}, path)
    dst = swiftlib.create_model("swift_v1_test", num_classes=0)
    report = load_encoder_weights(dst, path, "swift_v1_test")
    assert len(report["loaded"]) == len(ours)
    assert all(
        torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values())
    )


def test_denoising_is_in_the_contract_and_a_difference_is_warned():
    import warnings

    from swiftlib.tasks.common import check_contract

    base = {"grid": [8, 8, 8], "voxel_size": 2.0, "normalisation": "psc", "tr_range": [0.8, 0.8]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_contract({**base, "denoise": "simple"}, {**base, "denoise": "simple"})
        check_contract(base, {**base, "denoise": "simple"})  # older checkpoints: not recorded
    with pytest.warns(UserWarning, match="denoise: checkpoint trained on data denoised 'none'"):
        check_contract({**base, "denoise": "none"}, {**base, "denoise": "compcor"})


def test_a_tr_outside_the_trained_range_names_target_tr_as_the_fix():
    from swiftlib.tasks.common import ContractError, check_contract

    base = {"grid": [8, 8, 8], "voxel_size": 2.0, "normalisation": "psc"}
    with pytest.raises(ContractError, match=r"--target-tr 0\.76"):
        check_contract({**base, "tr_range": [0.72, 0.8]}, {**base, "tr_range": [2.0, 2.0]})
