#!/usr/bin/env bash
# The GPU check (docs/performance.md "GPU check"): run on a machine with one CUDA device, from the repository root:
#   make gpu-check                      # or: scripts/gpu_check.sh [--dry-run]
# (a)+(b)+(c): scripts/gpu_check.py — every method x 16-mixed/bf16-mixed on preact_spiking_resnet18
#   (finite, decreasing loss; <= 1 host sync per step from src/spikeforge under
#   torch.cuda.set_sync_debug_mode("warn")), fused vs reference neurons.
# (d): scripts/bench.py on the GPU — every method vs the plain spikingjelly loop and vs T x ANN, and
#   SLTT/BPTT memory vs T.
# Results: docs/benchmarks/gpu-<UTC date>/ (OUT=... to change). Designed to finish in <= 8 minutes on
# one recent GPU; every part has its own time limit. Exit status: 2 without a CUDA device, 1 when a
# check fails, 0 otherwise. --dry-run rehearses (a)-(c) on CPU (1 step, tiny shapes) and skips (d).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-docs/benchmarks/gpu-$(date -u +%Y-%m-%d)}
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1

if [[ $DRY == 0 ]] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA device visible (torch.cuda.is_available() is False); run it on a GPU machine, or scripts/gpu_check.sh --dry-run for the CPU rehearsal" >&2
  exit 2
fi
mkdir -p "$OUT"
start=$SECONDS
status=0

# (a) (b) (c): 270 s
if [[ $DRY == 1 ]]; then
  timeout 900 "$PY" scripts/gpu_check.py --dry-run --out "$OUT" || status=1
  echo "gpu_check: dry run done in $((SECONDS - start)) s (no bench on CPU)"
  exit $status
fi
timeout 270 "$PY" scripts/gpu_check.py --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log"
rc=${PIPESTATUS[0]}
[[ $rc == 124 ]] && echo "gpu_check: parts (a)-(c) ran past 270 s" >&2
[[ $rc != 0 ]] && status=1

# (d) bench: methods vs plain loop and T x ANN (T = 4, batch 32), then memory vs T (SLTT and BPTT)
BENCH=("$PY" scripts/bench.py --device cuda --models preact_spiking_resnet18 --image-size 32 --warmup 2 --steps 5
       --threads 8 --timeout 120 --no-plots)
timeout 130 "${BENCH[@]}" --methods bptt sltt stbp_tdbn stds asgl dsr --T 4 --batch 32 \
  --variants method plain ann --out "$OUT/bench_methods" 2>&1 | tee "$OUT/bench_methods.log"
[[ ${PIPESTATUS[0]} != 0 ]] && { echo "gpu_check: bench (methods) failed or ran past 130 s" >&2; status=1; }
timeout 60 "${BENCH[@]}" --methods sltt bptt_sltt --T 1 4 8 --batch 32 --variants method \
  --out "$OUT/bench_memory_vs_T" 2>&1 | tee "$OUT/bench_memory_vs_T.log"
[[ ${PIPESTATUS[0]} != 0 ]] && { echo "gpu_check: bench (memory vs T) failed or ran past 60 s" >&2; status=1; }

echo "gpu_check: $([[ $status == 0 ]] && echo PASS || echo FAIL) in $((SECONDS - start)) s; results in $OUT"
exit $status
