#!/usr/bin/env bash
# The GPU benchmark behind docs/performance.md, sized for one 10-minute call
# on one H100. Compilation takes minutes per resolution, so three processes
# start together: one times the eager modes at once while the other two
# compile the `fast` mode, one resolution each; each compiled process times
# only once the process before it is done. Timings taken while another
# process compiles share the CPU with it (docs/performance.md says which).
# The fp32 baseline of the angular differences runs last (it needs tens of
# GB of GPU memory).
#   bash scripts/bench_gpu.sh OUT_DIR
set -uo pipefail
OUT=${1:?usage: bench_gpu.sh OUT_DIR}
mkdir -p "$OUT" /tmp/keep
export PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
rm -f /tmp/eager.done /tmp/fast1024.done
mkdir -p /tmp/profiles
B="python3 scripts/bench.py --size full --device cuda --frames 70 --keep-dir /tmp/keep --out-dir /tmp/profiles --section-s 30"
$B --modes ${EAGER_MODES:-eager reference lowmem} --res 1024x576 512x288 --budget-s ${EAGER_S:-270} \
   --signal /tmp/eager.done --json "$OUT/eager.json" > "$OUT/eager.log" 2>&1 &
sleep 10
$B --modes fast --res 1024x576 --no-flops --wait-for /tmp/eager.done --budget-s ${FAST_S:-420} \
   --long 100@1024x576 1000@1024x576 --signal /tmp/fast1024.done --json "$OUT/fast1024.json" \
   > "$OUT/fast1024.log" 2>&1 &
sleep 10
$B --modes fast bf16 fp32 --res 512x288 --angles --no-flops --wait-for /tmp/fast1024.done --budget-s ${FAST_S:-420} \
   --long 1000@512x288 --json "$OUT/fast512.json" > "$OUT/fast512.log" 2>&1
wait
tar cf "$OUT/profiles.tar" -C /tmp profiles
for f in eager fast1024 fast512; do echo "== $f"; grep -v "^There are modules" "$OUT/$f.log" | tail -n 25; done
