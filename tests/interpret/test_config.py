"""Interpretation configs: every field check names the field, the value and what is allowed;
keyword options replace config fields and unknown ones get a "did you mean" (no model is
loaded for any of this: the checks run before the checkpoint is read)."""

import numpy as np
import pytest
import torch

from swiftlib.interpret import attribute, extract_embeddings
from swiftlib.interpret.config import AttributionConfig, EmbeddingConfig, InferenceConfig
from swiftlib.utils.config import ConfigError

# (config class, field, bad value, expected message)
BAD = [
    (
        InferenceConfig,
        "sequence_length",
        0,
        r"InferenceConfig.sequence_length=0: expected an "
        r"integer >= 1 or None \(frames per window\)",
    ),
    (InferenceConfig, "sequence_length", 8.0, r"sequence_length=8.0: expected an integer >= 1"),
    (InferenceConfig, "stride_between_seq", 0.0, r"stride_between_seq=0.0: expected a number > 0"),
    (InferenceConfig, "stride_between_seq", "1", r"stride_between_seq='1': expected a number > 0"),
    (InferenceConfig, "stride_within_seq", 0, r"stride_within_seq=0: expected an integer >= 1"),
    (InferenceConfig, "batch_size", 0, r"batch_size=0: expected an integer >= 1"),
    (InferenceConfig, "batch_size", True, r"batch_size=True: expected an integer >= 1"),
    (InferenceConfig, "precision", "fp16", r"precision='fp16': expected one of \('fp32', 'bf16'\)"),
    (InferenceConfig, "precision", "bf61", r"precision='bf61'.*\(did you mean 'bf16'\?\)"),
    (
        InferenceConfig,
        "device",
        "gpu",
        r"device='gpu': expected 'auto', 'cpu', 'cuda', "
        r"'cuda:<index>' or a torch.device",
    ),
    (InferenceConfig, "device", 0, r"device=0: expected 'auto'"),
    (InferenceConfig, "progress", "yes", r"progress='yes': expected True or False"),
    (
        AttributionConfig,
        "method",
        "lime",
        r"AttributionConfig.method='lime': expected one of "
        r"\('ig', 'ig_smoothgrad_sq', 'saliency'",
    ),
    (AttributionConfig, "method", "saliancy", r"\(did you mean 'saliency'\?\)"),
    (
        AttributionConfig,
        "target",
        -1,
        r"target=-1: expected a class index >= 0, 'label' "
        r"\(true class\), 'predicted' or None",
    ),
    (AttributionConfig, "target", "lable", r"target='lable'.*\(did you mean 'label'\?\)"),
    (AttributionConfig, "target", 1.0, r"target=1.0: expected a class index"),
    (AttributionConfig, "label", 3, r"label=3: expected a label name \(str\) or None"),
    (
        AttributionConfig,
        "baseline",
        "mean",
        r"baseline='mean': expected 'background', "
        r"'temporal_mean' or a number",
    ),
    (AttributionConfig, "baseline", "backgroud", r"\(did you mean 'background'\?\)"),
    (AttributionConfig, "baseline", True, r"baseline=True: expected 'background'"),
    (
        AttributionConfig,
        "aggregate",
        "max",
        r"aggregate='max': expected one of "
        r"\('abs', 'signed', 'subject_abs'\)",
    ),
    (AttributionConfig, "windows", 0, r"windows=0: expected an integer >= 1 or None"),
    (AttributionConfig, "internal_batch_size", 0, r"internal_batch_size=0: expected an integer"),
    (AttributionConfig, "n_steps", 0, r"n_steps=0: expected an integer >= 1 \(IG integration"),
    (AttributionConfig, "nt_samples", 0, r"nt_samples=0: expected an integer >= 1"),
    (AttributionConfig, "noise_level", -0.1, r"noise_level=-0.1: expected a number >= 0"),
    (
        AttributionConfig,
        "occlusion_window",
        (4, 4),
        r"occlusion_window=\(4, 4\): expected three "
        r"positive voxel counts \(d, h, w\)",
    ),
    (AttributionConfig, "occlusion_window", (4, 0, 4), r"occlusion_window=\(4, 0, 4\)"),
    (AttributionConfig, "occlusion_window", "444", r"occlusion_window='444'"),
    (AttributionConfig, "keep_window_maps", 1, r"keep_window_maps=1: expected True or False"),
    (AttributionConfig, "seed", -1, r"seed=-1: expected an integer >= 0"),
    (
        EmbeddingConfig,
        "level",
        "voxel",
        r"EmbeddingConfig.level='voxel': expected one of "
        r"\('subject', 'window'\)",
    ),
    (EmbeddingConfig, "level", "windows", r"\(did you mean 'window'\?\)"),
    (
        EmbeddingConfig,
        "stages",
        (-1,),
        r"stages=\(-1,\): expected a sequence of stage "
        r"indices >= 0",
    ),
    (EmbeddingConfig, "stages", "01", r"stages='01': expected a sequence of stage indices"),
    (EmbeddingConfig, "stages", 1, r"stages=1: expected a sequence"),
    (EmbeddingConfig, "chunk_subjects", 0, r"chunk_subjects=0: expected an integer >= 1"),
    (EmbeddingConfig, "num_workers", -1, r"num_workers=-1: expected an integer >= 0"),
]


@pytest.mark.parametrize(
    ("cls", "name", "value", "match"), BAD, ids=[f"{c.__name__}.{n}={v!r}" for c, n, v, _ in BAD]
)
def test_every_bad_field_is_named_with_what_is_allowed(cls, name, value, match):
    with pytest.raises(ConfigError, match=match):
        cls(**{name: value})
    with pytest.raises(ValueError):  # ConfigError is a ValueError (and a TypeError)
        cls.resolve(None, {name: value})


def test_the_defaults_are_valid_and_values_are_normalised():
    assert AttributionConfig().method == "ig" and AttributionConfig().batch_size == 1
    assert EmbeddingConfig().batch_size == 8 and EmbeddingConfig().level == "subject"
    cfg = AttributionConfig(
        baseline=0,
        occlusion_window=[2, 3, np.int64(4)],
        target=np.int64(1),
        device=torch.device("cpu"),
        stride_between_seq=1,
    )
    assert cfg.baseline == 0.0 and isinstance(cfg.baseline, float)
    assert cfg.occlusion_window == (2, 3, 4) and all(type(v) is int for v in cfg.occlusion_window)
    assert cfg.target == 1 and cfg.stride_between_seq == 1.0
    assert EmbeddingConfig(stages=[0, np.int64(1)]).stages == (0, 1)
    other = AttributionConfig(device="cuda:1", target="label", baseline="temporal_mean")
    assert (other.device, other.target, other.baseline) == ("cuda:1", "label", "temporal_mean")


def test_options_replace_config_fields_without_changing_the_config():
    base = AttributionConfig(method="smoothgrad", nt_samples=2)
    cfg = AttributionConfig.resolve(base, {"nt_samples": 4, "windows": 2})
    assert (cfg.method, cfg.nt_samples, cfg.windows) == ("smoothgrad", 4, 2)
    assert base.nt_samples == 2 and base.windows is None
    assert AttributionConfig.resolve(None, {}) == AttributionConfig()
    with pytest.raises(ConfigError, match=r"AttributionConfig.n_steps=0"):
        AttributionConfig.resolve(base, {"n_steps": 0})


def test_resolve_refuses_unknown_options_and_other_configs():
    with pytest.raises(
        ConfigError,
        match=r"^attribute\(\): unknown option 'methd' \(did you mean "
        r"'method'\?\); options are the AttributionConfig "
        r"fields: sequence_length, .*method",
    ):
        AttributionConfig.resolve(None, {"methd": "ig"}, caller="attribute()")
    with pytest.raises(
        ConfigError,
        match=r"unknown option 'subject' \(did you mean "
        r"'subjects'\?\)",
    ):
        AttributionConfig.resolve(None, {"subject": ["sub-0001"]}, also=("subjects",))
    with pytest.raises(ConfigError, match=r"unknown option 'colour'; options"):
        EmbeddingConfig.resolve(None, {"colour": "red"})
    with pytest.raises(
        ConfigError,
        match=r"config='ig': expected AttributionConfig or None; pass "
        r"settings as keywords \(e.g. method='ig'\)",
    ):
        AttributionConfig.resolve("ig")
    with pytest.raises(
        ConfigError,
        match=r"config='window': expected EmbeddingConfig or None; "
        r"pass settings as keywords \(e.g. level='window'\)",
    ):
        EmbeddingConfig.resolve("window")
    with pytest.raises(
        ConfigError,
        match=r"config=EmbeddingConfig\(.*\): expected "
        r"AttributionConfig or None$",
    ):
        AttributionConfig.resolve(EmbeddingConfig())


def test_entry_points_check_their_settings_before_reading_anything(tmp_path):
    """Keyword calls as the notebooks and the CLI make them; a bad one fails before the
    (here nonexistent) checkpoint or store is touched."""
    ckpt, store = tmp_path / "none.ckpt", tmp_path / "no_store"
    with pytest.raises(
        ConfigError,
        match=r"attribute\(\): unknown option 'n_step' \(did you mean "
        r"'n_steps'\?\)",
    ):
        attribute(ckpt, store, ["sub-0001"], method="ig", n_step=4)
    with pytest.raises(ConfigError, match=r"AttributionConfig.aggregate='max'"):
        attribute(ckpt, store, subjects=["sub-0001"], config=AttributionConfig(), aggregate="max")
    with pytest.raises(ConfigError, match=r"config='saliency': expected AttributionConfig"):
        attribute(ckpt, store, ["sub-0001"], "saliency")  # the old 4th positional argument
    with pytest.raises(
        ConfigError,
        match=r"extract_embeddings\(\): unknown option 'out_pth' "
        r"\(did you mean 'out_path'\?\)",
    ):
        extract_embeddings(ckpt, store, split="all", out_pth=tmp_path / "e.parquet")
    with pytest.raises(ConfigError, match=r"EmbeddingConfig.level='voxel'"):
        extract_embeddings(ckpt, store, split="all", level="voxel")
    with pytest.raises(ConfigError, match=r"config=AttributionConfig\(.*expected EmbeddingConfig"):
        extract_embeddings(ckpt, store, split="all", config=AttributionConfig())
