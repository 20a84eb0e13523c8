"""DeepSpeed through Lightning: a validated ZeRO config, and turning a ZeRO checkpoint
(a directory of sharded states) into a plain fp32 checkpoint for downstream use.

Every checkpoint argument of swiftlib (``init_from``, ``resume_from``'s checks, evaluate,
embeddings, attributions, ``swiftlib info``, the few-shot ``pretrained`` init) goes through
:func:`swiftlib.tasks.common.read_checkpoint`, which hands a DeepSpeed directory to
:func:`consolidated_checkpoint`: the shards are checked (complete, weights-only safe),
gathered once into ``<name>.fp32.ckpt`` beside the directory (atomic write, a lock against
concurrent ranks, the source's fingerprint recorded so a rewritten ``last.ckpt`` is
converted again) and that file is read from then on. ``fit`` does this itself at the end
of a DeepSpeed run, so downstream stages normally find the file ready.

On Perlmutter: ``trainer.strategy = "deepspeed_stage_2"`` (or ``_3``, ``_offload``) with
``precision = "bf16-mixed"``; the global batch arithmetic is checked before launch.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import importlib
import io
import logging
import os
from pathlib import Path

__all__ = [
    "DeepSpeedConfigError",
    "deepspeed_config",
    "lightning_deepspeed_config",
    "validate_deepspeed_config",
    "build_deepspeed_strategy",
    "deepspeed_strategy_class",
    "is_deepspeed_checkpoint",
    "inspect_deepspeed_checkpoint",
    "consolidated_checkpoint",
    "consolidated_path",
    "current_consolidated",
    "convert_deepspeed_checkpoint",
]

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
    offload = strategy.endswith("offload")
    if offload:
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
    if offload:
        # The tasks build torch AdamW (layer-wise LR-decay groups); DeepSpeed refuses a client
        # optimiser under ZeRO-Offload unless told that is intended. The step then runs on the
        # CPU-held fp32 master weights with torch's kernels instead of DeepSpeedCPUAdam's.
        cfg["zero_force_ds_cpu_optimizer"] = False
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
    for name, v in (
        ("train_micro_batch_size_per_gpu", micro),
        ("gradient_accumulation_steps", accum),
    ):
        if not isinstance(v, int) or v < 1:
            raise DeepSpeedConfigError(f"DeepSpeed {name}={v!r}: expected a positive integer")
    if total is not None and total != micro * accum * world_size:
        raise DeepSpeedConfigError(
            f"DeepSpeed train_batch_size={total} must equal train_micro_batch_size_per_gpu {micro} "
            f"× gradient_accumulation_steps {accum} × world size {world_size} = "
            f"{micro * accum * world_size}"
        )
    if cfg.get("bf16", {}).get("enabled") and cfg.get("fp16", {}).get("enabled"):
        raise DeepSpeedConfigError(
            "DeepSpeed config enables both bf16 and fp16; choose one (bf16 on A100/H100)"
        )
    stage = cfg.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise DeepSpeedConfigError(
            f"DeepSpeed zero_optimization.stage={stage!r}: expected 0, 1, 2 or 3"
        )


def lightning_deepspeed_config(trainer_cfg, data_cfg) -> dict:
    """The validated config minus ``gradient_accumulation_steps``, which Lightning insists on
    setting itself from ``Trainer(accumulate_grad_batches=…)`` (the same number)."""
    cfg = deepspeed_config(trainer_cfg, data_cfg)
    cfg.pop("gradient_accumulation_steps", None)
    return cfg


def build_deepspeed_strategy(trainer_cfg, data_cfg, strategy_cls=None):
    """Lightning's ``DeepSpeedStrategy`` with the validated config. On CPU
    (``accelerator="cpu"``, or ``"auto"`` without CUDA) the CUDA-only checks are skipped —
    DeepSpeed over gloo, for rehearsing a GPU preset and for tests. One process not started
    by srun/torchrun (a notebook on one GPU) runs DeepSpeed in itself. ``strategy_cls``
    overrides the class."""
    import torch

    on_cpu = trainer_cfg.accelerator == "cpu" or (
        trainer_cfg.accelerator == "auto" and not torch.cuda.is_available()
    )
    cls = strategy_cls or deepspeed_strategy_class(cpu=on_cpu)
    env = _in_process_environment() if trainer_cfg.world_size == 1 else None
    return cls(config=lightning_deepspeed_config(trainer_cfg, data_cfg), cluster_environment=env)


def _in_process_environment():
    """The environment of a single rank that no launcher started, or ``None`` under SLURM or
    torchrun (Lightning detects those itself)."""
    from lightning.fabric.plugins.environments import (
        LightningEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    if SLURMEnvironment.detect() or TorchElasticEnvironment.detect():
        return None

    class InProcessEnvironment(LightningEnvironment):
        @property
        def creates_processes_externally(self) -> bool:  # this process is the only rank
            return True

    return InProcessEnvironment()


_CLASSES: dict = {}


def deepspeed_strategy_class(cpu: bool = False):
    """Lightning's ``DeepSpeedStrategy``, changed in two places:

    - no launcher when the ranks already exist (srun, torchrun, one in-process rank): Lightning
      otherwise plans to start worker scripts and refuses in a Jupyter kernel ("not compatible
      with an interactive environment") although nothing needs launching;
    - ``cpu=True``: its CUDA-only checks skipped (gloo, DeepSpeed's CPU accelerator) — the same
      ZeRO partitioning, checkpoint folders and resume path as on GPUs, slowly.
    """
    if cpu in _CLASSES:
        return _CLASSES[cpu]
    import torch
    from lightning.fabric.utilities.seed import reset_seed
    from lightning.pytorch.strategies import DeepSpeedStrategy
    from lightning.pytorch.strategies.ddp import DDPStrategy

    class SwiftDeepSpeedStrategy(DeepSpeedStrategy):
        def _configure_launcher(self) -> None:
            super()._configure_launcher()
            if (
                self.cluster_environment is not None
                and self.cluster_environment.creates_processes_externally
            ):
                self._launcher = None  # every rank is already running this code

    class CPUDeepSpeedStrategy(SwiftDeepSpeedStrategy):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("process_group_backend", "gloo")
            super().__init__(*args, **kwargs)

        @property
        def root_device(self):  # DeepSpeed wants a device index; CPU has none by default
            return torch.device("cpu", self.local_rank)

        def setup_environment(self) -> None:  # skip the CUDA-only check
            DDPStrategy.setup_environment(self)

        def setup_distributed(self) -> None:  # skip the GPU index validation
            reset_seed()
            self.set_world_ranks()
            self._init_deepspeed_distributed()

    _CLASSES.update({False: SwiftDeepSpeedStrategy, True: CPUDeepSpeedStrategy})
    return _CLASSES[cpu]


#: Classes DeepSpeed pickles into its shards besides tensors and containers: an enum, a
#: (numel, start) dataclass and a loss-scaler record — plain data, no code on load. Shards
#: are scanned (not executed) and refused if they name anything else.
DEEPSPEED_SAFE_GLOBALS = frozenset(
    {
        "deepspeed.runtime.zero.config.ZeroStageEnum",
        "deepspeed.utils.tensor_fragment.fragment_address",
        "deepspeed.runtime.fp16.loss_scaler.LossScaler",
        "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    }
)
#: Where converted files go when the checkpoint's own folder is read-only (e.g. a shared
#: project space).
CACHE_ENV = "SWIFTLIB_CHECKPOINT_CACHE"
# {"path", "fingerprint", "zero_stage", "world_size"} in the fp32 file
_CONSOLIDATED_KEY = "deepspeed_source"
_KEEP = (
    "state_dict",
    "swiftlib",
    "epoch",
    "global_step",
    "hyper_parameters",
    "datamodule_hyper_parameters",
    "pytorch-lightning_version",
)


def _error(msg: str):
    from swiftlib.tasks.common import CheckpointError

    return CheckpointError(msg)


def is_deepspeed_checkpoint(path) -> bool:
    """A directory as DeepSpeed (and Lightning's DeepSpeed strategy) writes one: a ``latest``
    tag file and/or a tag folder holding ``*model_states.pt``."""
    p = Path(path)
    return p.is_dir() and ((p / "latest").is_file() or any(p.glob("*/*model_states.pt")))


def _tag_dir(src: Path) -> Path:
    latest = src / "latest"
    if latest.is_file():
        tag = latest.read_text().strip()
        if not (src / tag).is_dir():
            raise _error(
                f"{src}: its 'latest' file names tag {tag!r} but {src / tag} is missing; the "
                "DeepSpeed checkpoint is incomplete (copied without its shard folder?)"
            )
        return src / tag
    tags = sorted({f.parent for f in src.glob("*/*model_states.pt")})
    if len(tags) != 1:
        raise _error(
            f"{src}: no 'latest' file and {len(tags)} tag folders {[t.name for t in tags]}; "
            "expected one"
        )
    return tags[0]


def _scan_safe(f: Path) -> None:
    """Refuse a shard whose pickle names code outside torch's weights-only allowlist and ours."""
    import torch

    try:
        unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(f)))
    except Exception as e:  # noqa: BLE001 - a truncated/corrupt zip or pickle: say which file
        raise _error(
            f"{f}: unreadable DeepSpeed shard ({type(e).__name__}: {str(e)[:200]}); the checkpoint "
            "is corrupt or was cut short (a job killed while saving?) — use an earlier checkpoint"
        ) from None
    extra = sorted(unsafe - DEEPSPEED_SAFE_GLOBALS)
    if extra:
        raise _error(
            f"{f}: the shard's pickle refers to {extra[:5]}, which swiftlib does not load from a "
            "checkpoint (weights-only policy); expected a DeepSpeed ZeRO checkpoint of tensors and "
            "plain data"
        )


def _load_safe(f: Path) -> dict:
    import torch

    _scan_safe(f)

    allowed = []
    for name in DEEPSPEED_SAFE_GLOBALS:
        mod, _, attr = name.rpartition(".")
        try:
            allowed.append(getattr(importlib.import_module(mod), attr))
        except (ImportError, AttributeError):
            pass
    with torch.serialization.safe_globals(allowed):
        return torch.load(f, map_location="cpu", weights_only=True, mmap=True)


def inspect_deepspeed_checkpoint(path) -> dict:
    """Check a DeepSpeed checkpoint directory without converting it: the tag folder, the
    ZeRO stage, the data-parallel world size that wrote it, every rank's shard present and
    weights-only safe. Returns ``{"tag_dir", "zero_stage", "world_size", "meta", "client",
    "module"}`` (``meta`` = swiftlib's metadata, ``client`` = Lightning's saved state without
    the engine's tensors, ``module`` = the whole module's state under ZeRO 1/2, else None)."""
    src = Path(path)
    if not is_deepspeed_checkpoint(src):
        raise _error(
            f"{src}: not a DeepSpeed checkpoint directory (no 'latest' file, no "
            "*/*model_states.pt); expected a .ckpt file or the folder DeepSpeed/Lightning writes "
            "for one"
        )
    tag_dir = _tag_dir(src)
    model_files = sorted(tag_dir.glob("*model_states.pt"))
    optim_files = sorted(tag_dir.glob("*optim_states.pt"))
    if not model_files:
        raise _error(f"{tag_dir}: no *model_states.pt; the DeepSpeed checkpoint is incomplete")
    first = next(
        (f for f in model_files if f.name.startswith(("mp_rank_00", "zero_pp_rank_0_"))),
        model_files[0],
    )
    client = _load_safe(first)
    world = int(client.get("dp_world_size") or 1)
    recorded = ((client.get("ds_config") or {}).get("zero_optimization") or {}).get("stage")
    if recorded is not None:  # the run's own config, saved beside the weights
        stage = int(recorded)
    else:
        stage = (
            3
            if any(f.name.startswith("zero_pp_rank_") for f in model_files)
            else (2 if optim_files else 0)
        )
    expected = (
        [f"zero_pp_rank_{r}_mp_rank_00_model_states.pt" for r in range(world)] if stage == 3 else []
    )
    missing = [n for n in expected if not (tag_dir / n).is_file()]
    if stage >= 1 and len(optim_files) != world:
        missing.append(f"{world} *_optim_states.pt shards (found {len(optim_files)})")
    if missing:
        raise _error(
            f"{tag_dir}: written by {world} data-parallel ranks (ZeRO-{stage}) but shards are "
            f"missing: {missing[:4]}; copy the whole checkpoint folder (every rank's shard)"
        )
    for f in [*model_files, *optim_files]:
        if f is not first:
            _scan_safe(f)
    meta = client.get("swiftlib")
    slim = {k: v for k, v in client.items() if k not in ("module", "optimizer", "lr_scheduler")}
    module = client.get("module") if stage < 3 else None  # ZeRO-3 keeps placeholders there
    return {
        "tag_dir": tag_dir,
        "zero_stage": stage,
        "world_size": world,
        "meta": meta,
        "client": slim,
        "module": module,
    }


def _fingerprint(src: Path) -> dict:
    return {
        str(f.relative_to(src)): [f.stat().st_size, f.stat().st_mtime_ns]
        for f in sorted(src.rglob("*"))
        if f.is_file() and (f.suffix == ".pt" or f.name == "latest")
    }


def consolidated_path(path) -> Path:
    """Where the fp32 file of DeepSpeed directory ``path`` lives: ``<dir minus .ckpt>.fp32.ckpt``
    beside it, or under ``$SWIFTLIB_CHECKPOINT_CACHE`` when that is set."""
    src = Path(path).resolve()
    name = (src.name[:-5] if src.name.endswith(".ckpt") else src.name) + ".fp32.ckpt"
    cache = os.environ.get(CACHE_ENV)
    if cache:
        digest = hashlib.sha1(str(src).encode()).hexdigest()[:12]
        return Path(cache) / f"{digest}-{name}"
    return src.parent / name


def _is_current(out: Path, fingerprint: dict) -> bool:
    import torch

    try:
        doc = torch.load(out, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - an unreadable cache is converted again
        return False
    return (
        isinstance(doc, dict)
        and (doc.get(_CONSOLIDATED_KEY) or {}).get("fingerprint") == fingerprint
    )


def current_consolidated(path) -> Path | None:
    """The consolidated fp32 file of DeepSpeed folder ``path`` if one exists and was made from
    the folder as it is now; else ``None`` (nothing is converted)."""
    out = consolidated_path(path)
    return out if out.is_file() and _is_current(out, _fingerprint(Path(path))) else None


def consolidated_checkpoint(path) -> Path:
    """The consolidated fp32 ``.ckpt`` of DeepSpeed checkpoint directory ``path``: converted
    on first use (checked, gathered from every ZeRO shard, written atomically under a lock so
    concurrent ranks convert once), reused while the directory is unchanged."""
    src = Path(path)
    out = consolidated_path(src)
    fingerprint = _fingerprint(src)
    if out.is_file() and _is_current(out, fingerprint):
        return out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        lock = open(out.parent / f".{out.name}.lock", "a")  # noqa: SIM115 - held for the conversion below
    except OSError as e:
        raise _error(
            f"{src} is a DeepSpeed checkpoint; swiftlib reads it through a consolidated fp32 copy "
            f"at {out}, but {out.parent} is not writable ({e.strerror}). Set {CACHE_ENV}=<a "
            "writable folder> (e.g. $SCRATCH/swiftlib/ckpt_cache) to keep converted copies there"
        ) from None
    # One rank converts, the others wait and then find the file current. The lock file goes
    # when done (a waiter holding the unlinked inode re-checks the file; the write is atomic,
    # so at worst a conversion is repeated, never torn).
    try:
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            # another rank may have converted it
            if not (out.is_file() and _is_current(out, fingerprint)):
                convert_deepspeed_checkpoint(src, out)
            fcntl.flock(lock, fcntl.LOCK_UN)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock.name)
    return out


def convert_deepspeed_checkpoint(checkpoint_dir, output_path) -> Path:
    """A DeepSpeed checkpoint (a directory) → one fp32 ``.ckpt`` that
    ``torch.load(weights_only=True)``, ``init_from`` and ``swiftlib info`` read.

    Keeps ``state_dict`` (fp32, gathered from all ZeRO shards), ``swiftlib`` metadata,
    ``epoch``, ``global_step``, the task's and data's ``hyper_parameters``, and the source's
    fingerprint; drops optimiser shards. Checks the shards first (complete, weights-only
    safe); the output appears atomically or not at all.
    """
    import torch

    from swiftlib.utils.io import atomic_path

    src = Path(checkpoint_dir)
    if not src.is_dir():
        raise FileNotFoundError(
            f"{src}: expected a DeepSpeed checkpoint directory (Lightning writes one per .ckpt)"
        )
    # scans every shard: what DeepSpeed loads below is known safe
    info = inspect_deepspeed_checkpoint(src)
    fingerprint = _fingerprint(src)
    try:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    except ImportError:
        raise _error(
            f"{src} is a DeepSpeed checkpoint; converting it needs the deepspeed package "
            "(pip install deepspeed, or convert it once where swiftlib's environment is installed)"
        ) from None

    with contextlib.redirect_stdout(io.StringIO()):  # DeepSpeed prints progress lines
        state = get_fp32_state_dict_from_zero_checkpoint(str(src), tag=info["tag_dir"].name)
    state = {k.removeprefix("_forward_module."): v.float().contiguous() for k, v in state.items()}
    # DeepSpeed's gatherer can leave out frozen parameters (ZeRO-1 keeps no fragments of them);
    # under ZeRO 1/2 the model-states file holds the whole module, so take them from there.
    module = info["module"] or {}
    filled = {
        k.removeprefix("_forward_module."): v
        for k, v in module.items()
        if hasattr(v, "shape") and k.removeprefix("_forward_module.") not in state
    }
    if filled:
        log.info(
            "%s: %d tensors not in the ZeRO shards taken from the module states: %s",
            src,
            len(filled),
            sorted(filled)[:5],
        )
        state.update({k: v.float().contiguous() for k, v in filled.items()})
    keep = {k: info["client"][k] for k in _KEEP if k in info["client"]}
    keep["state_dict"] = state
    keep[_CONSOLIDATED_KEY] = {
        "path": str(src.resolve()),
        "fingerprint": fingerprint,
        "zero_stage": info["zero_stage"],
        "world_size": info["world_size"],
    }
    try:
        with atomic_path(output_path, suffix=".part") as tmp:
            torch.save(keep, tmp)
    except OSError as e:
        raise _error(
            f"cannot write the consolidated checkpoint {output_path} ({e.strerror}); set "
            f"{CACHE_ENV} to a writable folder with room for it"
        ) from None
    log.info(
        "consolidated DeepSpeed checkpoint %s (ZeRO-%d, %d ranks) -> %s (%d tensors)",
        src,
        info["zero_stage"],
        info["world_size"],
        output_path,
        len(state),
    )
    return Path(output_path)
