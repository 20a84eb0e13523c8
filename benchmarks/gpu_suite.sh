#!/usr/bin/env bash
# The prepared GPU suite: one command on a machine with one NVIDIA GPU (H100/H200 class) that
# finishes within GPU_SUITE_LIMIT_S (default 470 s, under 8 minutes) whatever happens.
#
#   bash benchmarks/gpu_suite.sh
#
# 1. installs the wheels carried in .whl/ (DeepSpeed and the pure-Python packages it needs that
#    a bare accelerator image lacks) into /tmp/site                           -> suite.txt
# 2. nvidia-smi, versions, and whether expandable CUDA allocator segments work -> suite.txt
# 3. pytest -m gpu tests/gpu: bf16-mixed SimMIM and fine-tuning steps, DeepSpeed ZeRO-2 bf16,
#    the SDPA kernel at the real shapes, CPU↔GPU agreement
#                                                 -> pytest_gpu.log, sdpa_backend.json
# 4. benchmarks/gpu_check.py: swift_v2_51m and swift_v2_202m at 96³×20, bf16, largest batch,
#    MFU, CPU↔GPU agreement                       -> gpu_check.json, gpu_check.log
# 5. only if time is left (≥ 120 s) and GPU_SUITE_COMPILE is not 0: torch.compile of
#    swift_v2_202m at half its largest eager batch -> gpu_check_compile.json, gpu_check_compile.log
#
# Files go to $OUT (default benchmarks/_work/gpu_suite/), flat. Every part runs under its own
# timeout and every part runs; the exit status is non-zero when part 1 (if .whl/ exists), 3 or
# 4 failed. Part 5 is an optional extra measurement: its failure is reported, not counted.
set -u -o pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-$PWD/benchmarks/_work/gpu_suite}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
LIMIT_S=${GPU_SUITE_LIMIT_S:-470}
SUITE="$OUT/suite.txt"
: >"$SUITE"
START=$SECONDS
declare -a STATUS=()
FAILED=0

say() { echo "[gpu_suite $(date +%H:%M:%S) +$((SECONDS - START))s] $*" | tee -a "$SUITE"; }
left() { echo $((LIMIT_S - (SECONDS - START))); }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }
# record NAME RC REQUIRED: remember a part's outcome (124/137 = stopped by its timeout)
record() {
    local what="ok"
    if [ "$2" -eq 124 ] || [ "$2" -eq 137 ]; then what="TIMED OUT (rc $2)"; elif [ "$2" -ne 0 ]; then what="FAILED (rc $2)"; fi
    if [ "$2" -ne 0 ] && [ "$3" = required ]; then FAILED=1; fi
    if [ "$2" -ne 0 ] && [ "$3" != required ]; then what="$what, optional"; fi
    STATUS+=("$1: $what")
    say "$1: $what"
}

# ---- 1. carried wheels -----------------------------------------------------------------
if compgen -G ".whl/*.whl" >/dev/null; then
    say "installing $(ls .whl/*.whl | wc -l) carried wheels into /tmp/site"
    timeout -k 5 90 $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl 2>&1 | tail -5 | tee -a "$SUITE"
    rc=$?
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    if [ $rc -eq 0 ]; then  # installed is not enough: DeepSpeed must import
        timeout -k 5 90 $PY -c "import deepspeed, pydantic; print('deepspeed', deepspeed.__version__, 'pydantic', pydantic.VERSION)" \
            2>&1 | tail -3 | tee -a "$SUITE"
        rc=$?
    fi
    record "wheels (.whl/ → /tmp/site, deepspeed imports)" $rc required
else
    say "no .whl/ folder: DeepSpeed test skips unless deepspeed is installed"
fi

# ---- 2. machine and versions ------------------------------------------------------------
{
    timeout 30 nvidia-smi
    timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
    timeout 60 $PY - <<'EOF'
import importlib, platform, sys
import torch
print("python", sys.version.split()[0], platform.machine())
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
      "device", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
for name in ("lightning", "torchmetrics", "numpy", "triton", "deepspeed", "pytest", "pytest_timeout", "pandas"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except Exception as err:  # noqa: BLE001 - report, do not stop
        print(name, "NOT IMPORTABLE:", repr(err)[:200])
EOF
} >>"$SUITE" 2>&1
tail -n 12 "$SUITE"
if PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout 60 $PY -c \
    "import torch; x = torch.empty(2**28, device='cuda'); del x; torch.cuda.empty_cache(); y = torch.ones(2**20, device='cuda').sum().item(); assert y == 2**20" \
    >>"$SUITE" 2>&1; then
    export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True  # less fragmentation near the memory limit
    say "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"
else
    say "expandable allocator segments not available here; default allocator"
fi

# ---- 3. pytest -m gpu ---------------------------------------------------------------------
T=$(min 240 $(($(left) - 210)))  # leave gpu_check at least 210 s
if [ "$T" -lt 60 ]; then T=60; fi
say "pytest -m gpu tests/gpu (timeout ${T}s)"
timeout -k 10 "$T" $PY -m pytest -m gpu tests/gpu -q -p no:cacheprovider -rA --durations=0 \
    --timeout=$(min 200 $((T - 15))) 2>&1 | tee "$OUT/pytest_gpu.log"
record "pytest -m gpu tests/gpu" $? required

# ---- 4. gpu_check: MFU, largest batch, agreement ------------------------------------------
T=$(min 270 $(($(left) - 5)))
if [ "$T" -lt 60 ]; then T=60; fi
say "gpu_check.py swift_v2_51m swift_v2_202m at 96³×20 (timeout ${T}s, budget $((T - 60))s)"
timeout -k 10 "$T" $PY benchmarks/gpu_check.py --presets swift_v2_51m swift_v2_202m --grid 96 96 96 20 \
    --budget-s $((T - 60)) --json "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.log"
record "gpu_check.py (eager)" $? required

# ---- 5. optional: torch.compile of swift_v2_202m -----------------------------------------
T=$(($(left) - 5))
B=$($PY - <<'EOF' 2>/dev/null
import json, os
report = json.load(open(os.path.join(os.environ["OUT"], "gpu_check.json")))
for r in report.get("results", []):
    if r.get("preset") == "swift_v2_202m" and r.get("eager", {}).get("largest_batch"):
        print(max(1, r["eager"]["largest_batch"] // 2))
EOF
)
if [ "${GPU_SUITE_COMPILE:-1}" != 0 ] && [ "$T" -ge 120 ] && [ -n "$B" ]; then
    say "gpu_check.py --compile-only swift_v2_202m at batch $B (timeout ${T}s)"
    timeout -k 10 "$T" $PY benchmarks/gpu_check.py --presets swift_v2_202m --grid 96 96 96 20 --compile-only \
        --skip-agreement --batch "$B" --budget-s $((T - 30)) --json "$OUT/gpu_check_compile.json" \
        2>&1 | tee "$OUT/gpu_check_compile.log"
    record "gpu_check.py --compile-only swift_v2_202m" $? optional
else
    why="${T}s left, eager batch '${B}', GPU_SUITE_COMPILE=${GPU_SUITE_COMPILE:-1}"
    STATUS+=("torch.compile of swift_v2_202m: not run ($why)")
    say "torch.compile measurement not run ($why)"
fi

# ---- summary ------------------------------------------------------------------------------
say "summary after $((SECONDS - START)) s:"
for s in "${STATUS[@]}"; do say "  $s"; done
$PY - <<'EOF' 2>/dev/null | tee -a "$SUITE"
import json, os
for name in ("gpu_check.json", "gpu_check_compile.json"):
    path = os.path.join(os.environ["OUT"], name)
    if not os.path.exists(path):
        continue
    for r in json.load(open(path)).get("results", []):
        for mode in ("eager", "compiled"):
            e = r.get(mode) or {}
            rows = {k: v for k, v in e.items() if k.startswith("batch_") and isinstance(v, dict) and "mfu" in v}
            for k, v in rows.items():
                print(f"  {r['preset']} {mode} batch {k[6:]}: {v['step_s'] * 1000:.0f} ms/step, "
                      f"{v['tflops']:.0f} TFLOP/s, MFU {v['mfu']:.1%}")
        agr = r.get("agreement") or {}
        if "fp32_ok" in agr:
            print(f"  {r['preset']} agreement: fp32 rel err {agr['fp32_max_rel_err']:.1e} "
                  f"({'ok' if agr['fp32_ok'] else 'FAIL'}), bf16 cosine {agr['bf16_cosine']:.5f} "
                  f"({'ok' if agr['bf16_ok'] else 'FAIL'})")
EOF
say "exit status $FAILED (files in $OUT: $(ls "$OUT" | tr '\n' ' '))"
exit $FAILED
