"""Start-up benchmark: each notebook's import cell, timed in a fresh process.

For every ``notebooks/**/NN_*.py`` (the jupytext twins), the first code cell with ``import``
statements — the cell a reader runs first, ``print("swiftlib", nb.setup())`` included — is
executed in a fresh Python process (``exec`` of the cell's text, timed inside the process, so
interpreter start-up is not counted); reported: the median of ``--repeats`` runs, the heavy
libraries that cell left in ``sys.modules``, and with ``--importtime`` the top offenders of
``python -X importtime`` (cumulative, self-inclusive) for the slowest cell.

Honest accounting: a training notebook needs torch and Lightning when it trains, so making
them lazy moves their import to a later cell. ``--deferred`` also times, per notebook, the
imports the *whole* notebook performs (every import statement of every code cell, same fresh
process): the difference to the import cell is the cost that moved to a later cell.

    python benchmarks/bench_import.py                 # every notebook, median of 3
    python benchmarks/bench_import.py --importtime --deferred
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = (
    "torch",
    "lightning",
    "torchmetrics",
    "monai",
    "nilearn",
    "sklearn",
    "scipy",
    "plotly",
    "matplotlib",
    "pandas",
    "h5py",
    "nibabel",
    "optuna",
    "captum",
    "papermill",
)
GOAL_S = 3.0

_RUNNER = r"""
import json, sys, time
src = sys.stdin.read()
t0 = time.perf_counter()
exec(compile(src, "<import cell>", "exec"), {"__name__": "__main__"})
seconds = time.perf_counter() - t0
heavy = sorted(m for m in HEAVY if m in sys.modules)
sys.stdout.flush()
print("\n@@BENCH@@" + json.dumps({"seconds": seconds, "heavy": heavy}))
"""


def cells(path: Path) -> list[str]:
    """The code cells of a jupytext ``py:percent`` file (markdown cells dropped)."""
    out, cur, is_code = [], [], False
    for line in path.read_text().splitlines():
        if line.startswith("# %%"):
            if is_code and cur:
                out.append("\n".join(cur))
            cur, is_code = [], "[markdown]" not in line
            continue
        if is_code:
            cur.append(line)
    if is_code and cur:
        out.append("\n".join(cur))
    return out


def _imports(src: str) -> list[str]:
    """The import statements of a cell, as source lines."""
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return []
    return [ast.unparse(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]


def import_cell(path: Path) -> str:
    """The first code cell with an import statement (the notebook's import cell)."""
    for src in cells(path):
        if _imports(src):
            return src
    raise SystemExit(f"{path}: no code cell with an import statement")


def all_imports(path: Path) -> str:
    """Every import statement of every code cell, in order (what the notebook imports)."""
    lines: list[str] = []
    for src in cells(path):
        lines += [s for s in _imports(src) if s not in lines]
    return "\n".join(lines)


def run_cell(src: str, env: dict) -> dict:
    code = f"HEAVY = {HEAVY!r}\n" + _RUNNER
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input=src,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    marker = proc.stdout.rfind("@@BENCH@@")
    if proc.returncode != 0 or marker < 0:
        raise SystemExit(f"the cell failed (rc {proc.returncode}):\n{src}\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout[marker + len("@@BENCH@@") :])


def importtime(src: str, env: dict, top: int) -> list[tuple[float, str]]:
    """``python -X importtime`` of a cell: the ``top`` modules (imported by the cell or by
    those directly, indented) by cumulative seconds."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", src],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|", 2)
        name = name[1:]  # one space after the bar; then two per level of nesting
        depth = (len(name) - len(name.lstrip(" "))) // 2
        if depth <= 1:  # what the cell imports and what those import directly
            rows.append((int(cumulative) / 1e6, "  " * depth + name.strip()))
    return sorted(rows, reverse=True)[:top]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--notebooks", nargs="*", default=None, help="paths (default: all)")
    ap.add_argument("--importtime", action="store_true", help="-X importtime of the slowest")
    ap.add_argument("--deferred", action="store_true", help="also time every import used")
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args(argv)
    paths = (
        [Path(p).resolve() for p in args.notebooks]
        if args.notebooks
        else sorted(p for p in (ROOT / "notebooks").glob("0*/*.py") if p.name[:2].isdigit())
    )
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    env.setdefault("OMP_NUM_THREADS", "1")
    print(f"load average (1 min) at the start: {os.getloadavg()[0]:.2f}")
    header = f"| notebook | import cell, s (median of {args.repeats}) |"
    header += " whole notebook's imports, s |" if args.deferred else ""
    header += " heavy modules after the import cell |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    worst, worst_src = -1.0, ""
    for path in paths:
        src = import_cell(path)
        runs = [run_cell(src, env) for _ in range(args.repeats)]
        seconds = statistics.median(r["seconds"] for r in runs)
        row = f"| {path.relative_to(ROOT)} | {seconds:.2f} |"
        if args.deferred:
            every = all_imports(path)
            total = statistics.median(
                run_cell(src + "\n" + every, env)["seconds"] for _ in range(args.repeats)
            )
            row += f" {total:.2f} |"
        row += f" {', '.join(runs[-1]['heavy']) or '—'} |"
        print(row, flush=True)
        if seconds > worst:
            worst, worst_src = seconds, src
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    verdict = "met" if worst < GOAL_S else "NOT met"
    print(f"slowest import cell: {worst:.2f} s (goal < {GOAL_S:g} s on a quiet machine: {verdict})")
    if args.importtime:
        print(f"\n-X importtime of the slowest import cell, top {args.top} packages (cumulative):")
        for sec, name in importtime(worst_src, env, args.top):
            print(f"  {sec:6.2f} s  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
