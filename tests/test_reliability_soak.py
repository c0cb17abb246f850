"""A short soak of one warm worker (scripts/soak_worker.py; docs/reliability.md
has the 200-job figures). Slow: NORMALCRAFTER_SLOW=1 runs it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "soak_worker.py"


@pytest.mark.slow
def test_a_warm_worker_does_not_grow_over_many_jobs(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--jobs", "60", "--every", "20", "--warmup", "10",
                        "--window", "15", "--threads", "1", "--check", "--json", str(tmp_path / "soak.json")],
                       capture_output=True, text=True, timeout=1800)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "verdict: no growth" in r.stdout and "one model load: True" in r.stdout
