"""scripts/bench.py end to end on the CPU with the tiny model: every number it
reports is produced and written (their values are not asserted: numbers
belong in docs/performance.md)."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_smoke_tiny_cpu(tmp_path):
    out_json, table = tmp_path / "bench.json", tmp_path / "table.md"
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--size", "tiny", "--device", "cpu",
           "--frames", "7", "--window", "6", "--stride", "4", "--chunk", "3", "--res", "64x64",
           "--modes", "reference", "eager", "fp32", "--angles", "--long", "10@64x64",
           "--json", str(out_json), "--markdown", str(table), "--out-dir", str(tmp_path / "prof")]
    # One thread: a tiny model's many small ops gain nothing from more, and
    # a CI machine shared with other tests makes spinning OpenMP threads crawl.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads(out_json.read_text())
    assert res["errors"] == {} and res["skipped"] == []
    assert res["environment"]["torch"] == __import__("torch").__version__

    runs = {(r["mode"], r["frames"]) for r in res["runs"]}
    assert {("reference", 7), ("eager", 7), ("fp32", 7)} <= runs
    for r in res["runs"]:
        assert r["ms_per_frame"] > 0 and r["fps"] > 0 and r["host_rss_peak_gb"] > 0
        assert set(r["stages"]) == {"clip", "vae_encode", "unet", "vae_decode", "io"}
        assert r["stages"]["unet"] > 0 and r["stages"]["vae_decode"] > 0

    flops = res["flops"]["64x64"]["per_frame"]
    assert flops["unet"] > 0 and flops["vae_decode"] > 0
    assert abs(flops["total"] - sum(v for k, v in flops.items() if k != "total")) < 1

    angles = res["angles_vs_fp32"]
    assert set(angles) == {"reference@64x64", "eager@64x64"}
    assert all(0 <= a["mean_deg"] <= a["max_deg"] <= 180 for a in angles.values())

    assert "| reference | 64x64 | 7 |" in table.read_text()
    assert (tmp_path / "prof" / "profile_reference_64x64.txt").stat().st_size > 0
    assert ("eager", 10) in runs  # the long-clip memory run


def test_memory_snapshot_finds_the_live_blocks_at_the_peak():
    """scripts/memory_snapshot.py replays the allocator's history: the peak
    is where the most bytes were live, and it names what was live then."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from memory_snapshot import peak_blocks

    def frame(name):
        return [{"filename": "/x/torch/nn/modules/module.py", "line": 1, "name": "_call_impl"},
                {"filename": "/x/normalcrafter/pipeline.py", "line": 7, "name": name}]

    trace = [
        {"action": "segment_alloc", "addr": 0, "size": 60, "frames": []},
        {"action": "segment_map", "addr": 60, "size": 40, "frames": []},
        {"action": "alloc", "addr": 1, "size": 40, "frames": frame("weights")},
        {"action": "alloc", "addr": 2, "size": 30, "frames": frame("unet")},
        {"action": "free_requested", "addr": 2, "size": 30, "frames": []},
        {"action": "free_completed", "addr": 2, "size": 30, "frames": []},
        {"action": "alloc", "addr": 3, "size": 50, "frames": frame("decode")},
        {"action": "free_completed", "addr": 3, "size": 50, "frames": []},
    ]
    peak, reserved, blocks = peak_blocks({"device_traces": [trace]})
    assert (peak, reserved) == (90, 100)
    assert blocks == [(50, "pipeline.py:7 decode"), (40, "pipeline.py:7 weights")]
