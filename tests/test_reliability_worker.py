"""Bad and odd inputs, hostile requests and fuzzed lines through the real
worker process (``python -m normalcrafter.worker``), driven by the
standard-library client; the parser is also fuzzed in this process."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from normalcrafter.worker.client import WorkerClient, WorkerError
from normalcrafter.worker.protocol import MAX_LINE_BYTES, ProtocolError, decode_request
from test_reliability_cases import (
    assert_odd_case_output, assert_one_line, assert_only_complete_outputs, bad_cases, odd_cases, sandbox_env,
)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> dict:
    return sandbox_env(tmp_path_factory.mktemp("worker-env"))


@pytest.fixture(scope="module")
def worker(sandbox):
    client = WorkerClient(sys.executable, env=sandbox)
    client.start()
    yield client
    client.stop()


@pytest.fixture(scope="module")
def bad(tmp_path_factory, tiny_model):
    return bad_cases(tmp_path_factory.mktemp("bad"), tiny_model)


@pytest.fixture(scope="module")
def odd(tmp_path_factory, tiny_model):
    return odd_cases(tmp_path_factory.mktemp("odd"), tiny_model)


def run_job(worker: WorkerClient, job: dict) -> tuple[dict | None, WorkerError | None, list[dict]]:
    events: list[dict] = []
    try:
        done = worker.wait(worker.submit(job), timeout=600, on_event=events.append)
    except WorkerError as exc:
        return None, exc, events
    return done, None, events


def test_every_bad_input_is_an_error_event_with_its_code(worker, bad):
    """All cases through one worker: each fails alone, and the worker lives on."""
    for name, case in bad.items():
        done, error, _ = run_job(worker, case.job())
        assert done is None and error is not None, name
        assert error.code == case.code, (name, error.code, error.message)
        assert_one_line(error.message, case)
        assert_only_complete_outputs(case.output)
    assert worker.alive


@pytest.mark.parametrize("name", [
    "one_frame", "odd_size", "large", "gray", "rgba", "deep", "float_tiff", "float_exr", "gray_video", "deep_video",
    "vfr", "lying_avi", "gaps", "hostile_path", "output_in_input", "hash_folder",
])
def test_odd_input_is_estimated_whole_and_explained(name, worker, odd):
    case = odd[name]
    done, error, events = run_job(worker, case.job())
    assert error is None, error and error.message
    assert_odd_case_output(case, [e["message"] for e in events if e["type"] == "warning"])
    assert sorted(done["result"]["files"]) == [str(case.output / f"normal.{n:05d}.exr") for n in case.frames]
    # Run again: everything is found done (the outputs are not read back as input, the numbers match).
    again, error, _ = run_job(worker, case.job())
    assert error is None and again["result"]["frames"] == 0 and again["result"]["skipped"] == len(case.frames)


@pytest.mark.parametrize("field, value, fragment", [
    ("frames", ["0", 3], "whole numbers"),
    ("frames", [True, 3], "whole numbers"),
    ("frames", [0, 2.5], "whole numbers"),
    ("frames", [0], "[start, end]"),
    ("frames", [5, 2], "0 <= start < end"),
    ("stride", 0, "stride"),
    ("max_res", -1, "max resolution"),
    ("convention", "XYZ", None),
    ("format", "../../exr", "format must be one of"),
    ("model_convention", 7, "model_convention"),
])
def test_wrong_settings_are_refused_before_queueing(worker, odd, field, value, fragment, tmp_path):
    job = {**odd["one_frame"].job(), "output_dir": str(tmp_path / "o"), field: value}
    with pytest.raises(WorkerError) as info:
        worker.wait(worker.submit(job), timeout=30)
    assert info.value.code == "bad_request" and "\n" not in info.value.message
    assert fragment is None or fragment in info.value.message, info.value.message
    assert not (tmp_path / "o").exists()


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_names_in_requests_never_become_paths(worker, odd, tmp_path):
    """Job ids and request ids are labels: traversal or odd characters in them
    write nothing anywhere; outputs go only into the folder given."""
    case = odd["one_frame"]
    root = tmp_path / "root"
    out = root / "inside" / "out"
    out.parent.mkdir(parents=True)
    before = snapshot(tmp_path)
    hostile_ids = ["../../escape", "/tmp/escape-abs", "..", "a/../../b", "x\ny", "$(touch PWNED)", "ü" * 300]
    for job_id in hostile_ids:
        done = worker.wait(worker.submit({**case.job(), "output_dir": str(out), "job": job_id}), timeout=60)
        assert done["job"] == job_id
    written = snapshot(tmp_path) - before
    assert written == {"root/inside/out", "root/inside/out/normal.00000.exr", "root/inside/out/normalcrafter_job.json"}
    assert not Path("/tmp/escape-abs").exists() and not (Path.cwd() / "PWNED").exists()


# -- the parser ----------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
request_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["hello", "estimate", "download", "cancel", "status", "shutdown", "bogus"]) | json_values},
    optional={"id": json_values, "job": json_values, "input": json_values, "output_dir": json_values,
              "frames": json_values, "window": json_values, "drain": json_values, "model": json_values,
              "dir": json_values, "format": json_values},
)
lines = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    request_like.map(lambda v: json.dumps(v).encode()),
    request_like.map(lambda v: json.dumps(v).encode()[: len(json.dumps(v)) // 2]),
)


@given(line=lines)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_decode_request_refuses_only_with_protocol_errors(line):
    try:
        req = decode_request(line)
    except ProtocolError as exc:
        assert exc.message and "\n" not in exc.message
        return
    assert req.type in ("hello", "estimate", "download", "cancel", "status", "shutdown")
    assert req.id is None or isinstance(req.id, str)


@given(line=lines)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_line_gets_exactly_one_answer(line):
    """Worker.handle_line with the real engine's checks: no line raises, every
    line is answered once, and every answer is one encodable event."""
    from normalcrafter.worker.runner import CoreRunner
    from normalcrafter.worker.server import Worker

    try:
        kind = decode_request(line).type
    except ProtocolError:
        kind = None
    out: list[bytes] = []
    w = Worker(out.append, CoreRunner())
    w.handle_line(line)
    events = [json.loads(raw) for raw in out]
    for e in events:
        assert e["type"] != "error" or (e["code"] == "bad_request" and "\n" not in e["message"]), e
    if kind in ("cancel", "shutdown"):  # answered by the job's own events, or by "bye"
        assert all(e["type"] == "error" for e in events) and len(events) <= 1, events
    else:
        expected = {None: "error", "hello": "hello", "status": "status"}.get(kind, ("queued", "error"))
        assert len(events) == 1 and events[0]["type"] in expected, (kind, events)


def fuzz_stream(seed: int, n: int) -> list[bytes]:
    """Random bytes, random JSON, truncated and over-long lines, wrong types."""
    rng = random.Random(seed)
    words = ["type", "estimate", "status", "cancel", "job", "id", "input", "frames", "window", "drain", "hello"]
    out = []
    for _ in range(n):
        kind = rng.randrange(6)
        if kind == 0:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80))).replace(b"\n", b" "))
        elif kind == 1:
            obj = {rng.choice(words): rng.choice([None, True, 3, -1, 2.5, "x", [], {}, rng.choice(words)])
                   for _ in range(rng.randrange(1, 5))}
            out.append(json.dumps(obj).encode())
        elif kind == 2:
            out.append(json.dumps({"type": "estimate", "input": rng.choice([5, None, [], "x"]),
                                   "output_dir": rng.choice([{}, 1.5, "", "y"])}).encode())
        elif kind == 3:
            out.append(b'{"type": "status", "id": "' + b"z" * rng.randrange(MAX_LINE_BYTES // 2, 2 * MAX_LINE_BYTES))
        elif kind == 4:
            out.append(json.dumps({"type": "cancel", "job": rng.choice([None, "nope", 5])}).encode())
        else:
            out.append(rng.choice([b"[]", b"null", b"1e999", b'"type"', b"{", b'{"type": null}', b"\xff\xfe"]))
    return out


def test_worker_process_survives_a_fuzzed_stream(sandbox, odd, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "normalcrafter.worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, **sandbox})
    job = {"type": "estimate", "job": "real", **odd["one_frame"].job(), "output_dir": str(tmp_path / "o")}
    stream = fuzz_stream(seed=9, n=150) + [json.dumps(job).encode(), b'{"type": "shutdown", "drain": true}']
    out, _ = proc.communicate(b"\n".join(stream) + b"\n", timeout=180)
    events = [json.loads(line) for line in out.splitlines()]  # every stdout line is one JSON event
    assert proc.returncode == 0
    assert events[0]["type"] == "hello" and events[-1]["type"] == "bye"
    assert all(e["code"] == "bad_request" for e in events if e["type"] == "error" and e["job"] != "real")
    real = [e for e in events if e["job"] == "real"]
    assert real[0]["type"] == "queued" and real[-1]["type"] == "done", real[-3:]
    assert (tmp_path / "o" / "normal.00000.exr").exists()
