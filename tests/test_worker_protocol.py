"""The worker's wire format, its stdout isolation, its failure mapping and
the client's standalone-ness, without a running worker."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import normalcrafter.worker.client as client_module
from normalcrafter import errors
from normalcrafter.worker import protocol
from normalcrafter.worker.protocol import ProtocolError, decode_request, encode_event


def test_decode_request_fields():
    req = decode_request(b'{"type": "estimate", "id": "r7", "job": "a", "input": "x.mp4", "max_res": 512}\n')
    assert (req.type, req.id, req.job) == ("estimate", "r7", "a")
    assert req.body == {"input": "x.mp4", "max_res": 512}


@pytest.mark.parametrize(
    "line, fragment, request_id",
    [
        (b"not json", "not valid JSON", None),
        (b"\xff\xfe{}", "not valid JSON", None),
        (b"[1, 2]", "JSON object", None),
        (b'{"id": "r1"}', '"type"', "r1"),
        (b'{"type": "frobnicate", "id": "r2"}', "unknown request type 'frobnicate'", "r2"),
        (b'{"type": "cancel", "job": 5}', '"job" must be a string', None),
        (b'{"type": "status", "id": 3}', '"id" must be a string', None),
        (b'{"type": "status", "job": ""}', "must not be empty", None),
        (b"x" * (protocol.MAX_LINE_BYTES + 1), "longer than the limit", None),
    ],
)
def test_decode_request_refuses_with_a_reason(line, fragment, request_id):
    with pytest.raises(ProtocolError) as info:
        decode_request(line)
    assert fragment in info.value.message
    assert info.value.request_id == request_id


def test_encode_event_is_one_ascii_json_line():
    line = encode_event({"type": "file", "job": "j", "path": "/tmp/Ñormal ✓/n.exr", "fps": float("nan"),
                         "eta": float("inf"), "nested": {"x": [float("-inf"), 1.5]}})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    line.decode("ascii")
    event = json.loads(line)
    assert event["path"] == "/tmp/Ñormal ✓/n.exr"
    assert event["fps"] is None and event["eta"] is None and event["nested"] == {"x": [None, 1.5]}
    assert list(event)[:2] == ["type", "job"]


def test_encode_event_refuses_unknown_types():
    with pytest.raises(ValueError):
        encode_event({"type": "gossip"})


def test_event_without_job_gets_null_job():
    assert json.loads(encode_event({"type": "bye", "reason": "x"}))["job"] is None


def test_claim_stdio_keeps_prints_out_of_the_protocol_stream():
    """Library prints and raw writes to fd 1 after start-up land on stderr."""
    code = (
        "import os, sys\n"
        "from normalcrafter.worker.__main__ import claim_stdio\n"
        "proto_in, proto_out = claim_stdio()\n"
        "print('print noise'); sys.stdout.flush()\n"
        "os.write(1, b'fd noise\\n')\n"
        "assert sys.stdin.read() == ''\n"  # libraries cannot eat requests
        "proto_out.write(proto_in.readline().upper()); proto_out.flush()\n"
    )
    run = subprocess.run([sys.executable, "-c", code], input=b"request\n", capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout == b"REQUEST\n"
    assert b"print noise" in run.stderr and b"fd noise" in run.stderr


def test_client_uses_the_standard_library_only():
    tree = ast.parse(Path(client_module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in the vendored client"
            imported.add(node.module.split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported - set(sys.stdlib_module_names)
    assert client_module.PROTOCOL_VERSION == protocol.PROTOCOL_VERSION


def test_client_runs_as_a_standalone_file(tmp_path):
    """As vendored: the file alone on sys.path, the package not importable."""
    (tmp_path / "client.py").write_bytes(Path(client_module.__file__).read_bytes())
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from client import WorkerClient, WorkerError\n"
        "try:\n"
        "    WorkerClient(sys.argv[1] + '/no-python').start(timeout=5)\n"
        "except WorkerError as e:\n"
        "    print(e.code, '|', e.message)\n"
        "assert 'normalcrafter' not in sys.modules\n"
    )
    run = subprocess.run([sys.executable, "-S", "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("worker_unavailable | no Python interpreter at")


def test_out_of_memory_maps_to_a_code_and_a_suggestion():
    import torch

    from normalcrafter.job import EstimateSettings
    from normalcrafter.worker.runner import CoreRunner, EstimateRequest

    runner = CoreRunner()
    params = EstimateRequest("clip.mp4", "out", EstimateSettings(max_res=1024, decode_chunk=7))
    exc = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")
    code, message, suggestion = runner.failure(exc, "estimate", params)
    assert code == errors.OUT_OF_MEMORY
    assert message == "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert "max resolution (now 1024; try 512)" in suggestion and "decode chunk (now 7; try 3)" in suggestion
    # The job layer's own out-of-memory error keeps its message and gets the suggestion too.
    code, message, suggestion = runner.failure(
        errors.NormalCrafterError(errors.OUT_OF_MEMORY, "out of memory at 1024x576"), "estimate", params)
    assert (code, message) == (errors.OUT_OF_MEMORY, "out of memory at 1024x576") and "decode chunk" in suggestion
    code, message, _ = runner.failure(KeyError("boom"), "estimate", params)
    assert code == errors.INTERNAL and "KeyError" in message


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"output_dir": "o"}, '"input"'),
        ({"input": "i", "output_dir": "o", "window": "big"}, '"window" must be int, not a string'),
        ({"input": "i", "output_dir": "o", "window": True}, '"window" must be int, not a boolean'),
        ({"input": "i", "output_dir": "o", "renormalize": 1}, '"renormalize" must be bool'),
        ({"input": "i", "output_dir": "o", "model": 3}, '"model" must be str or null'),
        ({"input": "i", "output_dir": "o", "frames": "0:5"}, '"frames" must be list or null'),
        ({"input": "i", "output_dir": "o", "frames": ["a", 3]}, '"frames" must be [start, end]'),
        ({"input": "i", "output_dir": "o", "frames": [0.5, None]}, '"frames" must be [start, end]'),
        ({"input": "i", "output_dir": "o", "frames": [0]}, '"frames" must be [start, end]'),
        ({"input": "i", "output_dir": "o", "wndow": 5}, "unknown setting(s): wndow"),
        ({"input": "i", "output_dir": "o", "stride": 20}, "stride <= window"),
        ({"input": "i", "output_dir": "o", "device": "cuda:7"}, "not available"),
        ({"input": "i", "output_dir": "o", "device": "toaster"}, "device"),
    ],
)
def test_estimate_requests_are_checked_before_queueing(body, fragment):
    import torch

    from normalcrafter.worker.runner import parse_estimate

    if "cuda:7" in str(body) and torch.cuda.device_count() > 7:
        body = {**body, "device": f"cuda:{torch.cuda.device_count()}"}
    with pytest.raises(errors.NormalCrafterError) as info:
        parse_estimate(body)
    assert info.value.code == errors.BAD_REQUEST
    assert fragment in info.value.message


def test_download_requests_are_checked():
    from normalcrafter.model.loading import PUBLISHED_UNET_REPO
    from normalcrafter.worker.download import DownloadRequest, plan

    assert DownloadRequest.from_body({}) == DownloadRequest(PUBLISHED_UNET_REPO, None)
    for body in ({"model": "no slash"}, {"model": "a/b", "dir": 3}, {"mdl": "a/b"}):
        with pytest.raises(errors.NormalCrafterError) as info:
            DownloadRequest.from_body(body)
        assert info.value.code == errors.BAD_REQUEST
    # The published model: UNet and VAE from its repo, the rest from SVD-xt, never the SVD UNet.
    (own, own_files), (svd, svd_files) = plan(PUBLISHED_UNET_REPO)
    assert own == PUBLISHED_UNET_REPO and own_files == ["unet/*.json", "unet/*.safetensors", "vae/*.json",
                                                        "vae/*.safetensors"]
    assert not any(p.startswith(("unet", "vae")) for p in svd_files) and "image_encoder/*.safetensors" in svd_files


def test_download_progress_bar_reports_bytes_and_stops_on_cancel():
    """The tqdm class handed to snapshot_download, used the way the hub uses it."""
    from normalcrafter.errors import Cancelled
    from normalcrafter.worker.download import _progress_bar_class

    events, cancel = [], []
    bar_class = _progress_bar_class("owner/repo", events.append, lambda: bool(cancel))
    files = bar_class(total=3, desc="Fetching 3 files")  # not bytes: no events of its own
    received = bar_class(name="huggingface_hub.transfer", unit="B", total=0, initial=0)
    bar_class(name="huggingface_hub.written", unit="B", total=0)  # the second byte bar is ignored
    received.total = 1000  # the hub grows the total as file sizes become known
    received.update(400)
    files.update(1)
    assert events == [{"type": "progress", "unit": "bytes", "repo": "owner/repo", "done": 400, "total": 1000,
                       "bytes_per_s": events[0]["bytes_per_s"], "eta_s": events[0]["eta_s"]}]
    assert events[0]["bytes_per_s"] > 0 and abs(events[0]["eta_s"] - 600 / events[0]["bytes_per_s"]) <= 0.06
    cancel.append(True)
    with pytest.raises(Cancelled):
        received.update(100)
