#!/usr/bin/env bash
# Set up the environment (with test tools and bpy) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh test
exec .venv/bin/python -m pytest -q "$@"
