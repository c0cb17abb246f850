#!/usr/bin/env bash
# The GPU benchmark behind docs/performance.md, sized for one 10-minute call
# on one H100: one process times the eager modes while another compiles the
# `fast` mode; the compiled mode is timed once the first process is done, so
# the two never share the GPU while timing.
#   bash scripts/bench_gpu.sh OUT_DIR
set -uo pipefail
OUT=${1:?usage: bench_gpu.sh OUT_DIR}
mkdir -p "$OUT" /tmp/keep
export PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
rm -f /tmp/others.done
B="python3 scripts/bench.py --size full --device cuda --frames 70 --res 1024x576 512x288 --angles --keep-dir /tmp/keep --out-dir $OUT --section-s 30"
$B --modes reference fp32 eager bf16 lowmem --budget-s ${OTHERS_S:-300} --signal /tmp/others.done \
   --json "$OUT/others.json" > "$OUT/others.log" 2>&1 &
sleep 20
$B --modes fast --no-flops --wait-for /tmp/others.done --budget-s ${FAST_S:-200} \
   --long ${LONG:-100@1024x576 1000@1024x576 1000@512x288} --json "$OUT/fast.json" 2>&1 | tee "$OUT/fast.log"
wait
tail -n 30 "$OUT/others.log"
