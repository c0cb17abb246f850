"""The real worker process (``python -m normalcrafter.worker``) with the tiny
random-weight model, driven through the standard-library client and, for
malformed input, through raw pipes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

import normalcrafter
from normalcrafter.worker.client import WorkerClient, WorkerError

N_FRAMES = 12
# Small windows so the clip runs through several windows and decode chunks;
# fp32 because fp16 on CUDA is not bitwise reproducible from run to run.
FAST = {"window": 6, "stride": 4, "decode_chunk": 3, "max_res": 96, "dtype": "fp32"}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> dict:
    """Environment for every worker: no network, an empty hub cache, logs in
    tmp, one torch thread (two threads on a busy 2-core machine run the tiny
    model about ten times slower, spinning against each other)."""
    root = tmp_path_factory.mktemp("worker-env")
    return {"HF_HUB_OFFLINE": "1", "HF_HOME": str(root / "hf"), "NORMALCRAFTER_LOG_DIR": str(root / "logs"),
            "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def sequence(tmp_path_factory) -> Path:
    """12 PNG frames of 64x96: a bright square moving over a gradient."""
    import cv2

    folder = tmp_path_factory.mktemp("sequence")
    yy, xx = np.mgrid[0:64, 0:96]
    for i in range(N_FRAMES):
        img = np.stack([xx * 2, yy * 3, np.full_like(xx, 40 + 5 * i)], axis=-1).astype(np.uint8)
        img[20:40, 4 * i: 4 * i + 20] = 230
        cv2.imwrite(str(folder / f"plate.{i + 1:04d}.png"), img)
    return folder


@pytest.fixture(scope="module")
def movie(tmp_path_factory, sequence) -> Path:
    """The same frames as an H.264 mp4."""
    import av
    import cv2

    path = tmp_path_factory.mktemp("movie") / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for f in sorted(sequence.glob("*.png")):
            frame = av.VideoFrame.from_ndarray(cv2.imread(str(f))[:, :, ::-1].copy(), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def job_for(source: Path, out: Path, model: Path, **extra) -> dict:
    return {"input": str(source), "output_dir": str(out), "model": str(model), **FAST, **extra}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sequence, tiny_model) -> dict[int, np.ndarray]:
    """The sequence through the job layer in this process: what the worker must reproduce."""
    from normalcrafter.job import EstimateSettings, run_estimate

    import torch

    out = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers: the thread count may change float sums
    try:
        run_estimate(sequence, out, EstimateSettings(model=str(tiny_model), **FAST))
    finally:
        torch.set_num_threads(threads)
    return read_outputs(out)


def read_exr(path: Path) -> np.ndarray:
    import OpenEXR

    with OpenEXR.File(str(path)) as f:
        ch = f.channels()
        return np.stack([ch[f"N.{a}"].pixels for a in "XYZ"], axis=-1)


def read_outputs(folder: Path) -> dict[int, np.ndarray]:
    return {int(p.name.split(".")[1]): read_exr(p) for p in sorted(folder.glob("normal.*.exr"))}


def assert_same_as(reference: dict, folder: Path) -> None:
    got = read_outputs(folder)
    assert sorted(got) == sorted(reference)
    for frame, normals in reference.items():
        assert np.array_equal(got[frame], normals), f"frame {frame} differs"


def no_partial_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".part")]


@pytest.fixture(scope="module")
def worker(sandbox, tmp_path_factory):
    """One worker shared by the tests that leave it usable."""
    client = WorkerClient(sys.executable, env=sandbox, log_path=str(tmp_path_factory.mktemp("log") / "worker.log"))
    client.start()
    yield client
    client.stop()


def new_worker(sandbox, *args: str) -> WorkerClient:
    client = WorkerClient(sys.executable, args=list(args), env=sandbox)
    client.start()
    return client


def gone(pid: int, within: float) -> bool:
    """True once ``pid`` has exited (a zombie counts: it holds no memory)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


# -- handshake ---------------------------------------------------------------

def test_handshake_reports_versions_devices_and_memory(worker):
    import torch

    hello = worker.hello
    assert hello["type"] == "hello" and hello["job"] is None
    assert hello["protocol"] == 1 and hello["version"] == normalcrafter.__version__
    assert hello["torch"] == torch.__version__
    assert hello["cuda"]["available"] == torch.cuda.is_available()
    assert hello["default_device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    cpu = [d for d in hello["devices"] if d["id"] == "cpu"][0]
    assert 0 < cpu["free_bytes"] <= cpu["total_bytes"] == psutil.virtual_memory().total
    assert len(hello["devices"]) == 1 + torch.cuda.device_count() + bool(hello["mps"])
    assert hello["estimate_defaults"]["window"] == 14 and hello["model_loads"] == 0
    assert psutil.Process(hello["pid"]).is_running() and hello["pid"] != os.getpid()
    assert Path(hello["log_path"]).is_file() and worker.alive


# -- jobs ----------------------------------------------------------------------

def test_job_streams_events_and_writes_the_job_layers_frames(worker, sequence, tiny_model, reference, tmp_path):
    events = []
    job = worker.submit(job_for(sequence, tmp_path / "out", tiny_model))
    done = worker.wait(job, timeout=120, on_event=events.append)
    mine = [e for e in events if e["job"] == job]
    kinds = [e["type"] for e in mine]
    assert kinds[0] == "queued" and kinds[-1] == "done" and "error" not in kinds
    stages = [e["stage"] for e in mine if e["type"] == "stage"]
    assert stages[0] == "reading" and "estimating" in stages and stages[-1] == "done"
    progress = [e for e in mine if e["type"] == "progress"]
    assert [e["done"] for e in progress] == list(range(1, N_FRAMES + 1))
    assert {e["total"] for e in progress} == {N_FRAMES}
    assert all(e["fps"] > 0 for e in progress) and progress[-1]["eta_s"] == 0
    files = [e for e in mine if e["type"] == "file"]
    assert [e["frame"] for e in files] == list(range(1, N_FRAMES + 1))
    assert done["result"]["files"] == [e["path"] for e in files]
    assert done["result"]["frames"] == N_FRAMES and done["result"]["skipped"] == 0
    assert done["timings"]["run_s"] > 0 and done["result"]["timings"]["total_s"] > 0
    assert_same_as(reference, tmp_path / "out")


def test_queued_jobs_share_one_model_load(worker, sequence, movie, tiny_model, tmp_path):
    loads_before = worker.hello["model_loads"]  # 0, or 1 if the job test ran first
    first = worker.submit(job_for(sequence, tmp_path / "a", tiny_model, format="png"))
    second = worker.submit(job_for(movie, tmp_path / "b", tiny_model, frames=[5, 11]))
    events = []
    worker.wait(first, timeout=120, on_event=events.append)
    done = worker.wait(second, timeout=120, on_event=events.append)
    queued = {e["job"]: e["position"] for e in events if e["type"] == "queued"}
    assert queued[second] >= 1  # the first job was ahead of it
    loading = [e["job"] for e in events if e["type"] == "stage" and e["stage"] == "loading_model"]
    assert second not in loading
    assert any("model already loaded" in e["message"] for e in events if e["job"] == second and e["type"] == "stage")
    assert done["result"]["model_loads"] <= loads_before + 1
    # The movie's frame range [5, 11) keeps the movie's own frame numbers.
    assert sorted(p.name for p in (tmp_path / "b").glob("normal.*.exr")) == [
        f"normal.{n:05d}.exr" for n in range(5, 11)]
    assert len(list((tmp_path / "a").glob("normal.*.png"))) == N_FRAMES


def test_cancel_running_and_queued_jobs_then_resume(worker, sequence, tiny_model, reference, tmp_path):
    out = tmp_path / "out"
    running = worker.submit(job_for(sequence, out, tiny_model))
    queued = worker.submit(job_for(sequence, tmp_path / "never", tiny_model))

    def cancel_on_first_file(event):
        if event["type"] == "file" and event["job"] == running:
            worker.cancel()  # the running job and every queued one

    with pytest.raises(WorkerError) as info:
        worker.wait(running, timeout=120, on_event=cancel_on_first_file)
    assert info.value.code == "cancelled"
    with pytest.raises(WorkerError) as info:
        worker.wait(queued, timeout=30)
    assert info.value.code == "cancelled" and "before it started" in info.value.message
    assert not (tmp_path / "never").exists()
    written = len(list(out.glob("normal.*.exr")))
    assert 1 <= written < N_FRAMES and no_partial_files(out)

    # The process survived; the same job resumes and matches an uninterrupted run.
    assert worker.alive
    done = worker.wait(worker.submit(job_for(sequence, out, tiny_model)), timeout=120)
    assert done["result"]["skipped"] == written and done["result"]["frames"] == N_FRAMES - written
    assert_same_as(reference, out)


def test_failures_are_error_events_and_the_worker_lives_on(worker, sequence, tiny_model, tmp_path):
    cases = [
        (job_for(tmp_path / "missing.mp4", tmp_path / "o1", tiny_model), "input_unreadable"),
        (job_for(sequence, tmp_path / "o2", tmp_path / "no-model"), "model_missing"),
        (job_for(sequence, tmp_path / "o3", tiny_model, window=0), "bad_request"),
        ({"input": str(sequence)}, "bad_request"),
    ]
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cases.append((job_for(sequence, blocker / "out", tiny_model), "output_not_writable"))
    for job, code in cases:
        with pytest.raises(WorkerError) as info:
            worker.wait(worker.submit(job), timeout=60)
        assert info.value.code == code, info.value.message
        assert "\n" not in info.value.message and "Traceback" not in info.value.message
    # Other settings into a folder that holds frames of a finished job are refused, not mixed.
    worker.wait(worker.submit(job_for(sequence, tmp_path / "o4", tiny_model, frames=[0, 3])), timeout=60)
    with pytest.raises(WorkerError) as info:
        worker.wait(worker.submit(job_for(sequence, tmp_path / "o4", tiny_model, frames=[0, 3], max_res=64)),
                    timeout=60)
    assert info.value.code == "output_conflict"
    assert worker.alive


def test_download_offline_is_a_clear_model_missing_error(worker, tmp_path):
    events = []
    with pytest.raises(WorkerError) as info:
        worker.wait(worker.download(folder=str(tmp_path / "weights")), timeout=60, on_event=events.append)
    assert info.value.code == "model_missing"
    assert "cannot download Yanrui95/NormalCrafter" in info.value.message
    assert "HF_HUB_OFFLINE" in info.value.message
    assert any(e["type"] == "stage" and e["stage"] == "downloading" for e in events)


# -- the raw protocol -----------------------------------------------------------

def test_malformed_and_unknown_requests_get_error_events(sandbox, tiny_model, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "normalcrafter.worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, **sandbox})
    # Fails when it runs (no such input), but is valid and queued: its id is taken.
    job = json.dumps({"type": "estimate", "job": "j1", **job_for(tmp_path / "gone.mp4", tmp_path / "o", tiny_model)})
    lines = [
        b"this is not json",
        b"\xff\xfe garbage",
        b"[1, 2, 3]",
        b'{"type": "frobnicate", "id": "r1"}',
        b'{"id": "r2"}',
        b'{"type": "estimate", "job": "j0", "input": 5}',
        b'{"type": "estimate", "job": "j2", "input": "x.mp4", "output_dir": "o", "frames": ["a", 1]}',
        b"{" + b" " * (1 << 20) + b"}",
        b"",
        job.encode(),
        job.encode(),  # the same job id again
        b'{"type": "cancel", "job": "no-such-job"}',
        b'{"type": "status", "id": "s1"}',
        b'{"type": "shutdown", "drain": true}',
    ]
    out, _ = proc.communicate(b"\n".join(lines) + b"\n", timeout=120)
    events = [json.loads(line) for line in out.splitlines()]  # every stdout line is protocol
    assert proc.returncode == 0
    assert events[0]["type"] == "hello" and events[-1] == {"type": "bye", "job": None,
                                                           "reason": "shutdown requested (after the queued jobs)"}
    errors = [e for e in events if e["type"] == "error"]
    errors = [e for e in errors if e["job"] != "j1"]
    assert [e["code"] for e in errors] == ["bad_request"] * 9, errors
    assert [e["request"] for e in errors[:5]] == [None, None, None, "r1", "r2"]
    assert errors[5]["job"] == "j0" and "input" in errors[5]["message"]
    assert errors[6]["job"] == "j2" and "frames" in errors[6]["message"]
    assert "longer than the limit" in errors[7]["message"]
    assert errors[8]["job"] is None and "already used" in errors[8]["message"]
    status = [e for e in events if e["type"] == "status"][0]
    assert status["request"] == "s1" and status["running"] in ("j1", None)
    j1 = [e for e in events if e["job"] == "j1"]
    assert j1[0]["type"] == "queued" and j1[-1]["type"] == "error" and j1[-1]["code"] == "input_unreadable"


# -- lifecycle ------------------------------------------------------------------

def test_kill_minus_9_mid_job_then_resume_to_identical_output(sandbox, worker, sequence, tiny_model, reference,
                                                               tmp_path):
    out = tmp_path / "out"
    client = new_worker(sandbox)
    pid = client.hello["pid"]
    job = client.submit(job_for(sequence, out, tiny_model))

    def kill_on_third_file(event):
        if event["type"] == "file" and event["frame"] == 3:
            os.kill(pid, signal.SIGKILL)

    with pytest.raises(WorkerError) as info:
        client.wait(job, timeout=120, on_event=kill_on_third_file)
    assert info.value.code == "worker_died" and "killed by signal 9" in info.value.message
    assert not client.alive and client.returncode == -signal.SIGKILL
    client.stop()
    written = read_outputs(out)
    assert 3 <= len(written) < N_FRAMES and no_partial_files(out)
    for frame, normals in written.items():  # finished frames are whole and final
        assert np.array_equal(normals, reference[frame])

    # Another worker process resumes the job.
    done = worker.wait(worker.submit(job_for(sequence, out, tiny_model)), timeout=120)
    assert done["result"]["skipped"] == len(written)
    assert_same_as(reference, out)


def test_sigterm_cancels_running_and_queued_jobs_and_exits_cleanly(sandbox, sequence, tiny_model, tmp_path):
    client = new_worker(sandbox)
    jobs = [client.submit(job_for(sequence, tmp_path / f"o{i}", tiny_model)) for i in range(3)]
    events = []

    def terminate_on_first_file(event):
        events.append(event)
        if event["type"] == "file":
            os.kill(client.hello["pid"], signal.SIGTERM)

    with pytest.raises(WorkerError) as info:
        client.wait(jobs[0], timeout=120, on_event=terminate_on_first_file)
    assert info.value.code == "cancelled"
    for job in jobs[1:]:
        with pytest.raises(WorkerError) as info:
            client.wait(job, timeout=30, on_event=events.append)
        assert info.value.code == "cancelled" and info.value.message == "cancelled before it started: received SIGTERM"
    assert gone(client.hello["pid"], within=30)
    bye = [e for e in events + client.poll() if e["type"] == "bye"]
    assert bye and bye[0]["reason"] == "received SIGTERM"
    client.stop()
    assert client.returncode == 0


def test_stop_ends_the_process_and_later_submits_fail_cleanly(sandbox, sequence, tiny_model, tmp_path):
    client = new_worker(sandbox)
    client.stop(timeout=30)
    assert not client.alive and client.returncode == 0
    with pytest.raises(WorkerError) as info:
        client.submit(job_for(sequence, tmp_path / "late", tiny_model))
    assert info.value.code == "worker_died"


def test_worker_exits_when_its_client_dies(sandbox, sequence, tiny_model, tmp_path):
    """A client killed mid-job (no shutdown request) closes the worker's stdin."""
    script = textwrap.dedent(f"""
        import sys, time
        from normalcrafter.worker.client import WorkerClient
        c = WorkerClient(sys.executable, env={sandbox!r})
        pid = c.start()["pid"]
        job = c.submit({job_for(sequence, tmp_path / "out", tiny_model)!r})
        print(pid, flush=True)
        time.sleep(600)
    """)
    client_proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    worker_pid = int(client_proc.stdout.readline())
    client_proc.kill()
    client_proc.wait()
    assert gone(worker_pid, within=30)


def test_worker_exits_when_the_watched_parent_dies(sandbox):
    """The watchdog: the pipes stay open, only the parent process goes."""
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    client = new_worker(sandbox, "--parent-pid", str(parent.pid))
    try:
        parent.kill()
        parent.wait()
        assert gone(client.hello["pid"], within=30)
        bye = [e for e in client.poll() if e["type"] == "bye"]
        assert bye and bye[0]["reason"] == f"the client process {parent.pid} exited"
    finally:
        client.stop()


# -- start-up failures ----------------------------------------------------------

def fake_python(folder: Path, name: str, body: str) -> str:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.skipif(sys.platform == "win32", reason="shell-script interpreters")
def test_start_failures_are_one_line_worker_unavailable_errors(tmp_path):
    cases = [
        (str(tmp_path / "nope" / "python"), 30, "no Python interpreter at"),
        # -S: no site-packages, so no normalcrafter, as in an interpreter where it was never installed.
        (fake_python(tmp_path, "no-package", f'exec "{sys.executable}" -S "$@"'), 30, "normalcrafter is not installed for"),
        (fake_python(tmp_path, "broken", "echo something broke >&2; exit 4"), 30, "exited with status 4: something broke"),
        (fake_python(tmp_path, "silent", "exec sleep 60"), 1, "did not answer within 1 s"),
    ]
    for python, timeout, fragment in cases:
        client = WorkerClient(python)
        started = time.monotonic()
        with pytest.raises(WorkerError) as info:
            client.start(timeout=timeout)
        assert info.value.code == "worker_unavailable"
        assert fragment in info.value.message and "\n" not in info.value.message
        assert time.monotonic() - started < timeout + 10
        assert not client.alive


@pytest.mark.gpu
def test_out_of_gpu_memory_is_an_error_with_a_suggestion_and_the_worker_goes_on(sandbox, sequence, tiny_model,
                                                                               tmp_path):
    import cv2

    big = tmp_path / "big"
    big.mkdir()
    rng = np.random.default_rng(0)
    for i in range(14):
        cv2.imwrite(str(big / f"plate.{i:04d}.png"), rng.integers(0, 256, (2048, 2048, 3), dtype=np.uint8))
    # A memory cap stands in for a small card: 0.4 GB of an 80 GB H100.
    client = new_worker(sandbox, "--gpu-memory-fraction", "0.005")
    try:
        cuda = client.hello["devices"][0]
        assert cuda["id"] == "cuda:0" and 0 < cuda["free_bytes"] <= cuda["total_bytes"]
        with pytest.raises(WorkerError) as info:
            client.wait(client.submit({"input": str(big), "output_dir": str(tmp_path / "big-out"),
                                       "model": str(tiny_model), "device": "cuda", "max_res": 0,
                                       "window": 14, "stride": 10, "decode_chunk": 14}), timeout=300)
        assert info.value.code == "out_of_memory", info.value.message
        assert "lower the max resolution (now no limit; try 512)" in info.value.message
        assert "decode chunk (now 14; try 7)" in info.value.message
        done = client.wait(client.submit(job_for(sequence, tmp_path / "small", tiny_model, device="cuda")),
                           timeout=300)
        assert done["result"]["frames"] == N_FRAMES
    finally:
        client.stop()
