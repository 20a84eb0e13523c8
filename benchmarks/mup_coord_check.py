"""µP coordinate check (Yang et al. 2022, "Tensor Programs V", §D.1): train a SwiFT v2 encoder
of several widths for a few Adam steps on one fixed batch, under µP (``mup=True`` +
``OptimConfig(mup=True)``) and under the standard parametrisation (SP) with the same learning
rate, and record per layer

* the **activation scale**: mean |output| of the layer at step t, and
* the **update scale**: mean |output_t − output_0| on the same input (how far the training
  steps moved the layer's output).

Under µP both stay flat as the width grows; under SP the update scale grows with the width
(≈ ∝ width for Adam), which is why the best learning rate shifts with model size under SP.
The optimiser is the training tasks' own (``swiftlib.tasks.optim.param_groups`` +
``build_optimizer``), so this checks the µP wiring end to end.

    python benchmarks/mup_coord_check.py --output-file docs/img/mup_coord_check.png
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger("mup_coord_check")

#: the tiny preset's grid with distinct sizes per axis; patch 2 → 6×8×10×3 tokens
IMG_SIZE = (12, 16, 20, 6)
BASE_OVERRIDES = dict(
    img_size=IMG_SIZE,
    depths=(2, 2),
    num_heads=(2, 4),
    window_size=(2, 2, 2, 2),
    patch_size=(2, 2, 2, 2),
    drop_path_rate=0.0,
    num_classes=3,
)


@dataclass
class CoordCheck:
    """Per parametrisation → per layer → one value per width (last step)."""

    widths: list[int]
    steps: int
    lr: float
    activation: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    update: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    loss: dict[str, list[float]] = field(default_factory=dict)

    def slopes(self, kind: str = "update") -> dict[str, dict[str, float]]:
        """Least-squares slope of log(scale) against log(width), per parametrisation and
        layer: 0 = flat, 1 = grows ∝ width."""
        data = self.update if kind == "update" else self.activation
        x = np.log(np.asarray(self.widths, dtype=float))
        return {
            p: {
                name: float(np.polyfit(x, np.log(np.maximum(v, 1e-30)), 1)[0])
                for name, v in d.items()
            }
            for p, d in data.items()
        }

    def to_dict(self) -> dict:
        return {
            "widths": self.widths,
            "steps": self.steps,
            "lr": self.lr,
            "activation": self.activation,
            "update": self.update,
            "loss": self.loss,
            "slopes": {"activation": self.slopes("activation"), "update": self.slopes("update")},
        }


def _layers(model) -> dict[str, torch.nn.Module]:
    """Layers whose outputs are tracked: patch embedding, every attention and MLP branch (before
    LayerScale), the final norm and the classifier logits."""
    layers = {"patch_embed": model.patch_embed}
    for i, stage in enumerate(model.stages):
        for j, blk in enumerate(stage.blocks):
            layers[f"s{i}.b{j}.attn"] = blk.attn
            layers[f"s{i}.b{j}.mlp"] = blk.mlp
    layers["norm"] = model.norm
    layers["logits"] = model.head
    return layers


def _run(width: int, mup: bool, steps: int, lr: float, base_width: int, seed: int):
    from swiftlib.models import create_model
    from swiftlib.tasks.optim import OptimConfig, build_optimizer, param_groups

    torch.manual_seed(seed)
    model = create_model(
        "swift_v2_test", **BASE_OVERRIDES, embed_dim=width, mup=mup, mup_base_width=base_width
    )
    cfg = OptimConfig(lr=lr, weight_decay=0.0, warmup_fraction=0.0, min_lr_ratio=1.0, mup=mup)
    opt, _ = build_optimizer(param_groups(model, cfg, encoder=model), cfg, steps)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(4, 1, *IMG_SIZE, generator=gen)  # (B, C, D, H, W, T)
    y = torch.randint(0, 3, (4,), generator=gen)
    outs: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, o, n=name: outs.__setitem__(n, o.detach()))
        for name, m in _layers(model).items()
    ]
    model.train()
    first: dict[str, torch.Tensor] = {}
    loss = float("nan")
    for step in range(steps + 1):
        out = model(x)
        if step == 0:
            first = dict(outs)
        if step == steps:
            break
        loss_t = F.cross_entropy(out, y)
        loss = float(loss_t.detach())
        opt.zero_grad(set_to_none=True)
        loss_t.backward()
        opt.step()
    for h in hooks:
        h.remove()
    act = {n: float(o.abs().mean()) for n, o in outs.items()}
    upd = {n: float((o - first[n]).abs().mean()) for n, o in outs.items()}
    return act, upd, loss


def coord_check(
    widths=(16, 32, 64, 128), steps: int = 4, lr: float = 1e-2, seed: int = 0
) -> CoordCheck:
    """Run the check for SP and µP (base width = ``widths[0]``) on the same batch and seed."""
    widths = [int(w) for w in widths]
    if len(widths) < 3 or sorted(set(widths)) != widths:
        raise ValueError(f"widths {widths}: expected ≥ 3 distinct increasing embed dims")
    for w in widths:
        if w % 4:
            raise ValueError(f"width {w}: embed_dim must be divisible by 4 (heads 2 and 4)")
    result = CoordCheck(widths=widths, steps=steps, lr=lr)
    for label, mup in (("sp", False), ("mup", True)):
        act_rows, upd_rows, losses = [], [], []
        for w in widths:
            act, upd, loss = _run(w, mup, steps, lr, widths[0], seed)
            act_rows.append(act)
            upd_rows.append(upd)
            losses.append(loss)
            log.info("%s width %d: loss %.3f", label, w, loss)
        names = list(act_rows[0])
        result.activation[label] = {n: [r[n] for r in act_rows] for n in names}
        result.update[label] = {n: [r[n] for r in upd_rows] for n in names}
        result.loss[label] = losses
    return result


def plot_coord_check(result: CoordCheck, axes=None, title=None, output_file=None):
    """Update scale against width per layer, SP left and µP right (log-log), shared y axis."""
    import matplotlib

    if output_file is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
    else:
        fig = axes[0].figure
    slopes = result.slopes("update")
    for ax, (label, name) in zip(axes, (("sp", "standard (SP)"), ("mup", "µP")), strict=True):
        for values in result.update[label].values():
            ax.plot(result.widths, values, marker="o", ms=3, lw=1, alpha=0.8)
        median = float(np.median(list(slopes[label].values())))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("embed_dim")
        ax.set_title(f"{name}: median slope {median:.2f}", fontsize=10)
    axes[0].set_ylabel(f"mean |Δ output| after {result.steps} Adam steps")
    fig.suptitle(title or f"µP coordinate check, SwiFT v2 (lr {result.lr:g}, one line per layer)")
    fig.tight_layout()
    if output_file is not None:
        fig.savefig(output_file, dpi=80)
    return fig


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64, 128])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output-file", help="PNG of the plot")
    ap.add_argument("--json", help="write the measured scales and slopes here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    result = coord_check(args.widths, args.steps, args.lr, args.seed)
    for kind in ("activation", "update"):
        for label, d in result.slopes(kind).items():
            vals = list(d.values())
            log.info(
                "%s %-10s slope vs log width: median %.2f, range %.2f … %.2f",
                label,
                kind,
                float(np.median(vals)),
                min(vals),
                max(vals),
            )
    if args.output_file:
        plot_coord_check(result, output_file=args.output_file)
    if args.json:
        from swiftlib.utils.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(result.to_dict(), indent=1))
    return 0 if all(math.isfinite(v) for v in result.loss["mup"]) else 1


if __name__ == "__main__":
    sys.exit(main())
