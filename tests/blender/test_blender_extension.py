"""The installed extension end to end: real bpy, the zip installed through
Blender's extension operator, a real worker with the tiny random model.

One Blender session (``scenarios.scenario_flow``) runs the whole story in
order, keeping one warm worker as a user's session would; the tests below
each check one part of what it observed.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import OpenEXR
import pytest

from blender_harness import needs_bpy, run_scenario

pytestmark = [pytest.mark.blender, needs_bpy]


@pytest.fixture(scope="module")
def flow(extension_zip, clips, tiny_model, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("flow")
    args = {
        "zip": str(extension_zip), "python": sys.executable, "model": str(tiny_model), "tmp": str(tmp),
        "clips": {k: str(v) for k, v in clips.items()},
    }
    facts = run_scenario("flow", args, tmp, timeout=600)
    facts["tmp"] = tmp
    return facts


@pytest.fixture
def sequencer_shows_exr(flow) -> None:
    """Before 4.4 the sequencer cannot show multilayer EXRs: strips get images instead."""
    if tuple(map(int, flow["version"].split(".")[:2])) < (4, 4):
        pytest.skip(f"Blender {flow['version']}: image strips are replaced by images (test_old_sequencer_gets_images)")


def exr(path) -> dict[str, np.ndarray]:
    with OpenEXR.File(str(path), separate_channels=True) as f:
        return {name: c.pixels.astype(np.float32) for name, c in f.channels().items()}


def strip(facts: list[dict], name: str) -> dict:
    return next(s for s in facts if s["name"] == name)


def test_panels_in_the_sequencer_and_the_clip_editor(flow):
    for space in ("sequence_editor", "clip_editor"):
        assert f"NORMALCRAFTER_PT_{space}_main" in flow["panels"]
        assert f"NORMALCRAFTER_PT_{space}_settings" in flow["panels"]


def test_panel_lists_the_targets_and_the_button(flow):
    # Every draw call was checked against this Blender's UILayout API (see PanelRecorder).
    idle = flow["panel_idle"]
    assert "  (SEQUENCE) plate: frames 12-15 (4)" in idle
    assert "[button normalcrafter.estimate] Estimate Normals" in idle
    assert {"== Settings", "== Advanced", "[field] Max Resolution: 64", "[field] Window: 14"} <= set(idle)


def test_panel_shows_progress_and_cancel_while_a_job_runs(flow):
    running = flow["panel_running"]  # drawn at the first pump that saw the job running
    assert "(RENDER_ANIMATION) Job 1 of 1: plate" in running
    assert any(line.startswith("[progress ") for line in running)
    assert "[button normalcrafter.cancel] Cancel" in running



def test_panel_shows_the_outcome_and_the_clip(flow):
    assert any(line.startswith("  (") and "'plate': 4 normal frames in" in line for line in flow["panel_done"])
    assert "  (FILE_MOVIE) shot_a.mp4: frames 100-103 (4)" in flow["panel_clip"]


def test_preferences_check_shows_the_worker_and_its_devices(flow):
    assert flow["check"] == ["FINISHED"]
    prefs = flow["preferences"]
    assert any(line.startswith("  (CHECKMARK) Worker ready: normalcrafter") for line in prefs)
    assert any(line.startswith("  cpu: ") and " free of " in line for line in prefs)
    assert any(line.startswith("  Log: ") for line in prefs)  # the worker names its log file
    # Blender's Allow Online Access is off here: no download button, a hint instead.
    assert not any("download_model" in line for line in prefs)
    assert any("Allow Online Access" in line for line in prefs)


def test_download_is_offered_only_with_online_access_and_runs_in_the_worker(flow):
    assert flow["download_offline_poll"] is False
    assert any("[button normalcrafter.download_model]" in line for line in flow["preferences_online"])
    download = flow["download"]
    assert download["result"] is None
    assert "Download failed: cannot download normalcrafter-tests/does-not-exist" in download["error"]
    assert download["error"].strip().count("\n") == 0 and "Traceback" not in download["error"]
    assert download["notice"] == [download["error"].strip().removeprefix("Error: ")]


def test_bad_interpreter_is_one_clear_line(flow):
    bad = flow["bad_python"]
    assert bad["result"] is None
    assert "no Python interpreter at" in bad["error"] and "no-such-python" in bad["error"]
    assert "Traceback" not in bad["error"] and bad["error"].strip().count("\n") == 0
    assert bad["status"] == [bad["error"].strip().removeprefix("Error: ")]


def test_non_blocking_path_never_waits(flow):
    modal = flow["modal"]
    # submit() returns while the worker is still starting (importing torch);
    # every pump() takes what arrived and returns.
    assert modal["submit_s"] < 0.5
    assert modal["max_pump_s"] < 0.1
    assert {"waiting", "queued", "running", "done"} <= set(modal["states"])
    assert modal["final"] == "done", modal["error"]
    assert modal["progress"][-1] == 4 and len(modal["progress"]) >= 2


def test_frames_sent_are_the_ones_the_strip_shows(flow):
    # "plate": content at 10 after 3 trimmed frames, handles trimming 2 and 7:
    # timeline 12..15 shows source frames 5..8.
    job = flow["modal"]["plans"][0]
    assert job["frames"] == [5, 9]
    assert job["format"] == "exr" and job["convention"] == "opengl" and job["max_res"] == 64
    out = Path(job["output_dir"])
    assert out == flow["tmp"] / "normals" / "plate"
    assert sorted(p.name for p in out.glob("normal.*.exr")) == [f"normal.{n:05d}.exr" for n in range(5, 9)]
    channels = exr(out / "normal.00005.exr")
    assert {"N.X", "N.Y", "N.Z", "R", "G", "B"} <= set(channels)
    assert channels["N.X"].shape == (48, 64)


def test_image_strip_above_the_plate_frame_for_frame(flow, sequencer_shows_exr):
    normals = strip(flow["after_modal"], "plate normals")
    plate = strip(flow["after_modal"], "plate")
    assert normals["type"] == "IMAGE" and normals["tag"] == "plate"
    assert normals["channel"] == plate["channel"] + 1
    assert (normals["final_start"], normals["final_end"]) == (plate["final_start"], plate["final_end"])
    assert normals["files"] == [f"normal.{n:05d}.exr" for n in range(5, 9)]
    assert normals["colorspace"] == "Non-Color"
    # //normals/plate/ next to the saved .blend
    assert Path(normals["directory"]) == flow["tmp"] / "normals" / "plate"


def test_sequencer_render_shows_the_matching_normal_frame(flow, sequencer_shows_exr):
    """Timeline frame t renders exactly the EXR of the source frame the plate shows at t."""
    out = flow["tmp"] / "normals" / "plate"
    frames = {n: np.stack([exr(out / f"normal.{n:05d}.exr")[c] for c in "RGB"], -1) for n in range(5, 9)}
    for t, source in ((13, 6), (15, 8)):
        rendered = exr(flow["renders"][str(t)])
        image = np.stack([rendered[c] for c in "RGB"], -1)
        errors = {n: float(np.abs(image - f).max()) for n, f in frames.items()}
        assert errors[source] < 1e-3, errors
        assert min(e for n, e in errors.items() if n != source) > 0.05, errors


def test_rerun_replaces_the_earlier_import(flow):
    assert flow["rerun"]["result"] == ["FINISHED"]
    made = [s["name"] for s in flow["after_rerun"] if s["tag"] == "plate"]
    made += [im["name"] for im in flow["images"] if im["plate"] == "plate"]
    assert made == ["plate normals"]


def test_batch_of_two_strips_in_one_click_on_one_warm_worker(flow):
    batch = flow["batch"]
    assert batch["result"] == ["FINISHED"], batch["error"]
    assert batch["same_worker"]
    assert [r["model_loads"] for r in batch["results"]] == [1, 1]  # the model stayed loaded
    assert [r["frame_numbers"] for r in batch["results"]] == [[1, 4], [0, 3]]
    assert len([line for line in batch["status"] if "'second': 4 normal frames" in line]) == 1
    assert len([line for line in batch["status"] if "'third': 4 normal frames" in line]) == 1


def test_batch_strips_each_get_their_image_strip(flow, sequencer_shows_exr):
    after = flow["after_batch"]
    second, third = strip(after, "second normals"), strip(after, "third normals")
    assert (second["channel"], second["final_start"], second["final_end"]) == (6, 41, 45)
    assert (third["channel"], third["final_start"], third["final_end"]) == (3, 60, 64)


def test_clip_becomes_a_non_color_image_sequence(flow):
    assert flow["clip"]["result"] == ["FINISHED"], flow["clip"]["error"]
    image = next(im for im in flow["images"] if im["clip"] == "shot_a.mp4")
    assert image["source"] == "SEQUENCE" and image["colorspace"] == "Non-Color" and image["fake_user"]
    # The clip starts at scene frame 100 showing video frame 12.
    assert Path(image["filepath"]).name == "normal.00012.exr"
    assert (image["frame_start"], image["frame_offset"], image["frame_duration"]) == (100, 11, 4)
    assert sorted(p.name for p in Path(image["filepath"]).parent.glob("*.exr")) == [
        f"normal.{n:05d}.exr" for n in range(12, 16)]


@pytest.mark.parametrize("case, text", [
    ("missing_model", "no-such-model does not exist"),
    ("unreadable", "not a readable video"),
])
def test_worker_errors_are_clear_reports(flow, case, text):
    facts = flow[case]
    assert facts["result"] is None
    assert text in facts["error"]
    assert "Traceback" not in facts["error"] and facts["error"].strip().count("\n") == 0
    assert len(facts["status"]) == 1 and text in facts["status"][0]


def test_next_job_runs_after_errors(flow):
    after = flow["after_errors"]
    assert after["result"] == ["FINISHED"], after["error"]
    assert "'fresh': 4 normal frames" in after["status"][0]


def test_cancel_keeps_finished_frames_and_no_partial_files(flow):
    cancel = flow["cancel"]
    assert cancel["state"] == "cancelled"
    frames = [f for f in cancel["files"] if f.startswith("normal.")]
    assert 1 <= len(frames) < cancel["total"]
    assert frames == [f"normal.{n:05d}.exr" for n in range(len(frames))]
    assert set(cancel["files"]) - set(frames) == {"normalcrafter_job.json"}
    assert flow["after_cancel"]["result"] == ["FINISHED"]


def test_disabling_the_add_on_stops_its_worker(flow):
    assert flow["worker_gone_after_disable"]


def test_quitting_blender_stops_the_worker(extension_zip, tiny_model, tmp_path):
    facts = run_scenario("quit", {"zip": str(extension_zip), "python": sys.executable, "model": str(tiny_model)},
                         tmp_path)
    pid = facts["worker_pid"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}")


def test_unsaved_files_write_to_the_extension_user_folder(flow):
    root = Path(flow["unsaved_root"])
    assert root.name == "normals" and "normalcrafter" in root.parts
    assert str(root).startswith(str(flow["tmp"] / "blender"))
    assert os.path.isdir(root)


def test_old_sequencer_gets_images(flow):
    """Blender 4.2's sequencer reads no pass of a multilayer EXR (garbage or a
    crash): there a strip's pass becomes a timed image, and the user is told."""
    if tuple(map(int, flow["version"].split(".")[:2])) >= (4, 4):
        pytest.skip(f"Blender {flow['version']} shows multilayer EXR strips")
    assert not [s for s in flow["after_batch"] if s["type"] == "IMAGE"]
    plate = next(im for im in flow["images"] if im["plate"] == "plate")
    assert (plate["frame_start"], plate["frame_offset"], plate["frame_duration"]) == (12, 4, 4)
    assert plate["source"] == "SEQUENCE" and plate["colorspace"] == "Non-Color"
    assert {im["plate"] for im in flow["images"]} >= {"plate", "second", "third"}
    panel_text = " ".join(line.strip() for line in flow["panel_done"])  # labels are wrapped
    assert "sequencer cannot show multilayer EXR files" in panel_text


def test_world_space_option_sends_camera_rotations_and_gets_an_nworld_pass(flow):
    import json

    world = flow["world"]
    assert world["result"] == ["FINISHED"], world
    job = world["plans"][0]
    rotations = json.loads(Path(job["camera_rotations"]).read_text())["frames"]
    first, stop = job["frames"]
    assert sorted(map(int, rotations)) == list(range(first, stop))
    for frame in (first, stop - 1):
        ch = exr(Path(job["output_dir"]) / f"normal.{frame:05d}.exr")
        n = np.stack([ch[f"N.{a}"] for a in "XYZ"], -1)
        nw = np.stack([ch[f"Nworld.{a}"] for a in "XYZ"], -1)
        r = np.array(rotations[str(frame)])
        assert np.abs(nw - n @ r.T).max() < 5e-3
    # the camera turned about Z between the first and last frame
    assert not np.allclose(rotations[str(first)], rotations[str(stop - 1)], atol=1e-3)


def test_compile_option_reaches_the_job(flow):
    assert flow["world"]["plans"][0]["compile"] is False
    assert flow["compile_plans"] and all(job["compile"] is True for job in flow["compile_plans"])
