"""DeepSpeed through Lightning: a validated ZeRO config, and turning a ZeRO checkpoint
(a directory of sharded states) into a plain fp32 checkpoint for downstream use.

On Perlmutter: ``trainer.strategy = "deepspeed_stage_2"`` (or ``_3``, ``_offload``) with
``precision = "bf16-mixed"``; the global batch arithmetic is checked before launch.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

__all__ = ["DeepSpeedConfigError", "deepspeed_config", "lightning_deepspeed_config", "validate_deepspeed_config",
           "build_deepspeed_strategy",
           "convert_deepspeed_checkpoint"]

log = logging.getLogger(__name__)


class DeepSpeedConfigError(ValueError):
    pass


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (extra or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def deepspeed_config(trainer_cfg, data_cfg) -> dict:
    """The DeepSpeed config implied by the run (ZeRO stage, precision, batch arithmetic,
    clipping), with ``trainer.deepspeed_config`` merged on top, then validated."""
    strategy = trainer_cfg.strategy
    if not strategy.startswith("deepspeed_stage_"):
        raise DeepSpeedConfigError(f"strategy={strategy!r} is not a DeepSpeed strategy")
    stage = int(strategy.split("_")[2])
    zero = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if strategy.endswith("offload"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    cfg = {
        "zero_optimization": zero,
        "train_micro_batch_size_per_gpu": data_cfg.per_device_batch_size,
        "gradient_accumulation_steps": trainer_cfg.accumulate_grad_batches,
        "train_batch_size": data_cfg.batch_size,
        "bf16": {"enabled": trainer_cfg.precision.startswith("bf16")},
        "fp16": {"enabled": trainer_cfg.precision.startswith("16")},
        "zero_allow_untested_optimizer": True,
    }
    if trainer_cfg.gradient_clip_val:
        cfg["gradient_clipping"] = float(trainer_cfg.gradient_clip_val)
    cfg = _merge(cfg, trainer_cfg.deepspeed_config or {})
    validate_deepspeed_config(cfg, world_size=trainer_cfg.world_size)
    return cfg


def validate_deepspeed_config(cfg: dict, world_size: int) -> None:
    """Refuse inconsistent batch sizes and precision flags before any process starts."""
    micro = cfg.get("train_micro_batch_size_per_gpu")
    accum = cfg.get("gradient_accumulation_steps", 1)
    total = cfg.get("train_batch_size")
    for name, v in (("train_micro_batch_size_per_gpu", micro), ("gradient_accumulation_steps", accum)):
        if not isinstance(v, int) or v < 1:
            raise DeepSpeedConfigError(f"DeepSpeed {name}={v!r}: expected a positive integer")
    if total is not None and total != micro * accum * world_size:
        raise DeepSpeedConfigError(
            f"DeepSpeed train_batch_size={total} must equal train_micro_batch_size_per_gpu {micro} × "
            f"gradient_accumulation_steps {accum} × world size {world_size} = {micro * accum * world_size}"
        )
    if cfg.get("bf16", {}).get("enabled") and cfg.get("fp16", {}).get("enabled"):
        raise DeepSpeedConfigError("DeepSpeed config enables both bf16 and fp16; choose one (bf16 on A100/H100)")
    stage = cfg.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise DeepSpeedConfigError(f"DeepSpeed zero_optimization.stage={stage!r}: expected 0, 1, 2 or 3")


def lightning_deepspeed_config(trainer_cfg, data_cfg) -> dict:
    """The validated config minus ``gradient_accumulation_steps``, which Lightning insists on
    setting itself from ``Trainer(accumulate_grad_batches=…)`` (the same number)."""
    cfg = deepspeed_config(trainer_cfg, data_cfg)
    cfg.pop("gradient_accumulation_steps", None)
    return cfg


def build_deepspeed_strategy(trainer_cfg, data_cfg, strategy_cls=None):
    """Lightning's ``DeepSpeedStrategy`` (CUDA only) with the validated config;
    ``strategy_cls`` lets tests substitute a CPU subclass."""
    from lightning.pytorch.strategies import DeepSpeedStrategy

    cls = strategy_cls or DeepSpeedStrategy
    return cls(config=lightning_deepspeed_config(trainer_cfg, data_cfg))


def convert_deepspeed_checkpoint(checkpoint_dir, output_path) -> Path:
    """A Lightning DeepSpeed checkpoint (a directory) → one fp32 ``.ckpt`` that
    ``torch.load(weights_only=True)``, ``init_from`` and ``swiftlib info`` read.

    Keeps ``state_dict`` (fp32, gathered from all ZeRO shards), ``swiftlib`` metadata,
    ``epoch``, ``global_step`` and ``hyper_parameters``; drops optimiser shards.
    """
    import torch
    from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

    src = Path(checkpoint_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: expected a DeepSpeed checkpoint directory (Lightning writes one per .ckpt)")
    out = Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".full")
    convert_zero_checkpoint_to_fp32_state_dict(str(src), str(tmp))
    full = torch.load(tmp, map_location="cpu", weights_only=False)  # our own file, just written
    keep = {k: full[k] for k in ("state_dict", "swiftlib", "epoch", "global_step", "hyper_parameters",
                                 "pytorch-lightning_version") if k in full}
    torch.save(keep, out)
    tmp.unlink()
    log.info("converted DeepSpeed checkpoint %s -> %s (%d tensors)", src, out, len(keep["state_dict"]))
    return out
