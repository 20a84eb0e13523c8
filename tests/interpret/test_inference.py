"""The shared "checkpoint + store + subjects → model and windows" helper that attributions
and embeddings start from: layout as trained, config overrides, and what it refuses."""

import pytest
import torch

from swiftlib.interpret.config import AttributionConfig, EmbeddingConfig, InferenceConfig
from swiftlib.interpret.inference import (
    InferenceInputs,
    load_inference_inputs,
    load_inference_model,
    model_frame_step,
    model_frames,
)
from swiftlib.tasks.common import CheckpointError, ContractError


def test_a_store_path_and_subjects_give_the_model_and_its_trained_window_layout(
    age_run, interp_store
):
    sids = interp_store.subject_ids[:2]
    inputs = load_inference_inputs(
        str(age_run.best_checkpoint), str(interp_store.root), sids, InferenceConfig(device="cpu")
    )
    assert isinstance(inputs, InferenceInputs)
    assert inputs.store.root == interp_store.root and inputs.subject_ids == list(sids)
    assert inputs.device == torch.device("cpu") and inputs.model.kind == "finetune"
    assert next(inputs.model.module.parameters()).device.type == "cpu"
    # the layout the model was trained with: 8-frame windows, every frame, back to back
    layout = (inputs.sequence_length, inputs.stride_within_seq, inputs.stride_between_seq)
    assert layout == (8, 1, 1.0)
    assert (model_frames(inputs.model), model_frame_step(inputs.model)) == (8, 1)
    ds = inputs.windows()
    assert ds.num_windows == 2 * 3 and ds.mode == "eval"  # 24 frames -> 3 windows each
    assert ds.index["start"].tolist() == [0, 8, 16, 0, 8, 16]
    x = ds[0].x
    assert tuple(x.shape) == (1, 20, 24, 28, 8)  # (1, D, H, W, T)
    assert torch.isnan(torch.as_tensor(ds[0].y)).all()  # no label asked for
    labelled = inputs.windows(sids[1:], label="age")
    assert labelled.subject_ids == [sids[1]] and not torch.isnan(torch.as_tensor(labelled[0].y))
    with inputs.autocast():
        assert not torch.is_autocast_enabled("cpu")  # fp32: no autocast


def test_config_overrides_the_layout_and_a_loaded_model_is_reused(age_run, interp_store):
    model = load_inference_model(age_run.best_checkpoint, device="cpu")
    cfg = EmbeddingConfig(
        sequence_length=4,
        stride_within_seq=2,
        stride_between_seq=0.5,
        precision="bf16",
        device="cpu",
    )
    inputs = load_inference_inputs(model, interp_store, interp_store.subject_ids[0], cfg)
    assert inputs.model is model and inputs.subject_ids == [interp_store.subject_ids[0]]
    layout = (inputs.sequence_length, inputs.stride_within_seq, inputs.stride_between_seq)
    assert layout == (4, 2, 0.5)
    ds = inputs.windows()
    assert ds.index["start"].tolist()[:3] == [0, 4, 8]  # step = 0.5 * 4 frames * 2
    assert tuple(ds[0].x.shape)[-1] == 4
    with inputs.autocast():
        assert torch.is_autocast_enabled("cpu")  # bf16 on CPU
    # the config of either entry point works, and None means defaults
    assert load_inference_inputs(model, interp_store, ["sub-0001"]).config == InferenceConfig()
    att = load_inference_inputs(model, interp_store, ["sub-0001"], AttributionConfig(device="cpu"))
    assert att.config.method == "ig" and att.sequence_length == 8


def test_the_helper_refuses_what_does_not_fit(age_run, interp_store, synth_store, tmp_path):
    ckpt = age_run.best_checkpoint
    cpu = InferenceConfig(device="cpu")
    with pytest.raises(ContractError, match=r"grid: checkpoint expects \[20, 24, 28\]"):
        load_inference_inputs(ckpt, synth_store, ["sub-0001"], cpu)
    with pytest.raises(
        ValueError,
        match=r"1 subject\(s\) are not in store .*\['sub-0999'\] "
        r"\(did you mean",
    ):
        load_inference_inputs(ckpt, interp_store, ["sub-0001", "sub-0999"], cpu)
    with pytest.raises(ValueError, match="subjects is empty"):
        load_inference_inputs(ckpt, interp_store, [], cpu)
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": {}}, bare)
    with pytest.raises(CheckpointError, match="no 'swiftlib' metadata"):
        load_inference_inputs(bare, interp_store, ["sub-0001"], cpu)


def test_the_old_module_name_still_imports():
    """``swiftlib.interpret._model`` was the module's name; code outside the package (the
    slow science checks) still imports it."""
    from swiftlib.interpret import _model, inference, subjects

    assert _model.load_inference_model is inference.load_inference_model
    assert _model.check_subjects is subjects.check_subjects
