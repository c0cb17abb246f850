#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv.
#   scripts/setup_env.sh          runtime dependencies (CPU torch pinned)
#   scripts/setup_env.sh test     plus the test tools and Blender as a module (bpy)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
req=requirements/cpu.txt
[ "${1:-}" = "test" ] && req=requirements/test.txt
stamp=".venv/.installed-$(cat requirements/*.txt pyproject.toml | sha1sum | cut -c1-12)-${1:-run}"
if [ ! -e "$stamp" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -r "$req"
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
    touch "$stamp"
fi
