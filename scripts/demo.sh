#!/usr/bin/env bash
# Set up the environment and run the main job on the bundled sample clip with the bundled model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
exec .venv/bin/normalcrafter demo -o out/demo "$@"
