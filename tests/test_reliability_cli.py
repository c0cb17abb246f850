"""Bad and odd inputs through the `normalcrafter estimate` command.

Most cases call the command's own entry point (``normalcrafter.cli.main``) in
this process, which saves a torch import per case; an exception escaping it
fails the test just as a traceback would. The process-level guarantees (exit
status, stderr, a full disk) run the real command in a subprocess.
"""
from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from normalcrafter.cli import main
from test_reliability_cases import (
    FAST, assert_odd_case_output, assert_one_line, assert_only_complete_outputs, bad_cases, odd_cases, one_torch_thread,
    sandbox_env,
)

PREFIX = "normalcrafter estimate: error:"


@pytest.fixture(scope="module")
def bad(tmp_path_factory, tiny_model):
    return bad_cases(tmp_path_factory.mktemp("bad"), tiny_model)


@pytest.fixture(scope="module")
def odd(tmp_path_factory, tiny_model):
    return odd_cases(tmp_path_factory.mktemp("odd"), tiny_model)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    return {**os.environ, **sandbox_env(tmp_path_factory.mktemp("env"))}


def run_cli(args: list[str], capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    rc = main(["estimate", "-q", *args])
    return rc, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("name", [
    "missing", "empty", "truncated", "random_bytes", "damaged", "no_frames_video", "no_frames_folder", "one_by_one",
    "too_large", "mixed_sizes", "duplicate_numbers", "corrupt_frame", "under_a_file", "output_is_a_file",
    "output_on_procfs", "output_is_input", "incomplete_model", "truncated_weights", "weights_with_holes",
    "pickle_weights", "bad_model_config",
])
def test_bad_input_is_one_actionable_line(name, bad, capsys):
    case = bad[name]
    rc, lines = run_cli(case.cli_args(), capsys)
    assert rc == 2
    assert lines[-1].startswith(PREFIX), lines
    assert_one_line(lines[-1], case)
    assert_only_complete_outputs(case.output)


def test_negative_frame_range_is_refused(bad, capsys):
    case = bad["negative_frames"]
    args = [a for a in case.cli_args() if a not in ("--frames", "-3:4")] + ["--frames=-3:4"]
    rc, lines = run_cli(args, capsys)
    assert rc == 2 and lines[-1].startswith(PREFIX) and "--frames '-3:4'" in lines[-1], lines
    assert not case.output.exists()


# The worker suite runs every odd case; here, those whose warnings and paths
# the command itself must pass on.
@pytest.mark.parametrize("name", ["one_frame", "large", "vfr", "lying_avi", "gaps", "hostile_path",
                                  "output_in_input", "hash_folder"])
def test_odd_input_is_estimated_whole_and_explained(name, odd, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # where a shell would have run `touch PWNED`
    case = odd[name]
    rc, lines = run_cli(case.cli_args(), capsys)
    assert rc == 0, lines
    warnings = [line.removeprefix("warning: ") for line in lines if line.startswith("warning: ")]
    assert_odd_case_output(case, warnings)
    assert not list(tmp_path.iterdir()) and not (case.input.parent / "PWNED").exists()


def test_a_range_past_the_end_is_said(odd, capsys, tmp_path):
    case = odd["one_frame"]
    rc, lines = run_cli([str(case.input), "-o", str(tmp_path / "o"), "--model", str(case.model),
                         "--frames", "0:50"], capsys)
    assert rc == 0 and "warning: frames 0:50 were asked for, but the input has 1; estimating 0:1" in lines


def test_the_command_exits_2_with_the_line_and_no_traceback(bad, env):
    """The real process on a failure after the model loaded (mid-clip damage)."""
    case = bad["damaged"]
    r = subprocess.run([sys.executable, "-m", "normalcrafter", "estimate", "-q", *case.cli_args()],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(PREFIX)
    assert_one_line(r.stderr.strip().splitlines()[-1], case)


# -- a full disk -------------------------------------------------------------------

FULL_DISK_DRIVER = """
import sys
from normalcrafter.cli import main
args, out = sys.argv[1:-1], sys.argv[-1]
for fmt in ("exr", "npy"):
    print(fmt, main(["estimate", "-q", *args, "-o", f"{out}/{fmt}", "--format", fmt]), flush=True)
"""


def tmpfs_allowed() -> bool:
    """A private mount namespace where a small tmpfs can be mounted (root, or
    an unprivileged user namespace)."""
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


def run_on_full_disk(args: list[str], out: Path, how: str, env: dict) -> subprocess.CompletedProcess:
    """The job twice (EXR frames, one NPY array) into a folder that runs out of space.

    ``tmpfs``: a 48 KiB file system, mounted in a private namespace; its files
    are copied out for inspection before it vanishes. ``rlimit``: a per-file
    size limit below one EXR frame (SIGXFSZ ignored, so writes fail with
    EFBIG instead of killing the process)."""
    cmd = [sys.executable, "-c", FULL_DISK_DRIVER, *args, str(out)]
    if how == "tmpfs":
        keep = out.with_name(out.name + "-kept")
        keep.mkdir()
        script = 'mount -t tmpfs -o size=48k tmpfs "$0" || exit 99; "$@"; rc=$?; cp -a "$0"/. "$KEEP"/; exit $rc'
        r = subprocess.run(["unshare", "-rm", "sh", "-c", script, str(out), *cmd], capture_output=True, text=True,
                           timeout=600, env={**env, "KEEP": str(keep)})
        shutil.rmtree(out)
        keep.rename(out)
        return r

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, preexec_fn=limit, env=env)


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_full_disk_is_a_clean_error_and_keeps_only_complete_frames(how, tiny_model, env, tmp_path):
    if how == "tmpfs" and not tmpfs_allowed():
        pytest.skip("no mount namespace here; the rlimit variant covers the write failure")
    from media import moving_clip, write_video

    clip = write_video(tmp_path / "clip.mp4", moving_clip(12, 64, 96))
    out = tmp_path / "disk"
    out.mkdir()
    args = [clip, "--model", tiny_model, *sum(([f"--{k.replace('_', '-')}", str(v)] for k, v in FAST.items()), [])]
    r = run_on_full_disk(list(map(str, args)), out, how, env)
    assert "Traceback" not in r.stderr and r.returncode != 99, r.stderr
    assert r.stdout.split() == ["exr", "2", "npy", "2"], (r.stdout, r.stderr)
    errors = [line for line in r.stderr.splitlines() if line.startswith(PREFIX)]
    assert len(errors) == 2, r.stderr
    reason = "No space left on device" if how == "tmpfs" else "File too large"
    assert all("cannot write output" in e or "not writable" in e for e in errors), errors
    assert all(reason in e for e in errors), errors
    written = assert_only_complete_outputs(out / "exr")
    assert written == list(range(len(written)))  # a prefix of the clip, each frame whole
    if how == "tmpfs":
        assert 1 <= len(written) < 12  # the disk filled up part-way through
    assert not (out / "npy" / "normals.npy").exists()
    assert not [p for p in (out / "npy").iterdir() if p.name.endswith(".part")]


def test_a_re_rendered_plate_does_not_resume_into_old_frames(tiny_model, tmp_path, capsys):
    """Same file names, count and size, new pixels: the finished frames belong
    to the old plate, so a resume is refused rather than mixed."""
    import numpy as np

    from test_reliability_cases import image_sequence, write_image

    plate = image_sequence(tmp_path / "plate", [1, 2, 3])
    args = [str(plate), "-o", str(tmp_path / "out"), "--model", str(tiny_model),
            *sum(([f"--{k.replace('_', '-')}", str(v)] for k, v in FAST.items()), [])]
    assert run_cli(args, capsys)[0] == 0
    (tmp_path / "out" / "normal.00003.exr").unlink()  # as if killed before the last frame
    write_image(plate / "plate.0002.png", np.full((40, 56, 3), 200, np.uint8))
    rc, lines = run_cli(args, capsys)
    assert rc == 2 and "the input file changed" in lines[-1], lines
