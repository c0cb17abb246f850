#!/usr/bin/env bash
# The GPU benchmark behind docs/performance.md, sized for one 10-minute call
# on one H100. Compilation takes minutes per resolution, so three processes
# start together: one times the eager modes at once while the other two
# compile, one set of modes each; each compiled process times only once the
# process before it is done. Timings taken while another process compiles
# share the CPU with it (docs/performance.md says which).
#   bash scripts/bench_gpu.sh OUT_DIR
# The modes and sizes of each process can be set (defaults in brackets):
#   EAGER_MODES [eager reference lowmem] at EAGER_RES [1024x576 512x288];
#   A_MODES [fast] at A_RES [1024x576], long clips A_LONG [100@1024x576 1000@1024x576];
#   B_MODES [fast bf16 fp32] at B_RES [512x288], long clips B_LONG [1000@512x288],
#   with the angles against fp32 when B_MODES holds fp32.
# BENCH_ARGS are added to every process's bench.py arguments (e.g. --repeat 3).
# MEMORY=1 first writes where the eager mode's GPU memory goes at 1024x576
# (scripts/memory_snapshot.py) to OUT_DIR/memory.txt, in the eager process.
set -uo pipefail
OUT=${1:?usage: bench_gpu.sh OUT_DIR}
mkdir -p "$OUT" /tmp/keep /tmp/profiles
export PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
rm -f /tmp/eager.done /tmp/a.done
B="python3 scripts/bench.py --size full --device cuda --frames 70 --keep-dir /tmp/keep --out-dir /tmp/profiles --section-s 30 ${BENCH_ARGS:-}"
B_MODES=${B_MODES:-fast bf16 fp32}
ANGLES=""
[[ " $B_MODES " == *" fp32 "* ]] && ANGLES=--angles
{ [[ ${MEMORY:-0} == 1 ]] && python3 scripts/memory_snapshot.py --out "$OUT/memory.txt" > "$OUT/memory.log" 2>&1
$B --modes ${EAGER_MODES:-eager reference lowmem} --res ${EAGER_RES:-1024x576 512x288} --budget-s ${EAGER_S:-270} \
   --signal /tmp/eager.done --json "$OUT/eager.json" > "$OUT/eager.log" 2>&1; } &
sleep 10
$B --modes ${A_MODES:-fast} --res ${A_RES:-1024x576} --no-flops --wait-for /tmp/eager.done --budget-s ${FAST_S:-420} \
   --long ${A_LONG:-100@1024x576 1000@1024x576} --signal /tmp/a.done --json "$OUT/a.json" > "$OUT/a.log" 2>&1 &
sleep 10
$B --modes $B_MODES --res ${B_RES:-512x288} $ANGLES --no-flops --wait-for /tmp/a.done --budget-s ${FAST_S:-420} \
   --long ${B_LONG:-1000@512x288} --json "$OUT/b.json" > "$OUT/b.log" 2>&1
wait
tar cf "$OUT/profiles.tar" -C /tmp profiles
[[ -f "$OUT/memory.txt" ]] && cat "$OUT/memory.txt"
for f in eager a b; do echo "== $f"; grep -v "^There are modules" "$OUT/$f.log" | tail -n 25; done
