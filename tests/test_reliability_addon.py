"""Bad inputs, a worker crash and network access, seen from the Blender add-on.

One Blender session (real bpy, in a subprocess: bpy keeps global state) installs
the built extension, estimates movie strips whose files are then damaged in
the ways of test_reliability_cases, kills its worker mid-job, and runs the
same strip again. An audit hook records every connection and process start
of Blender's own process while the add-on works. Run as a script, this file
is that session:

    python tests/test_reliability_addon.py '{"result": "facts.json", ...}'
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MODULE = "bl_ext.user_default.normalcrafter"
# Strip name -> how its movie file is damaged after the strip was made.
DAMAGE = {"missing": "missing", "empty": "empty", "cut": "truncated", "noise": "random_bytes", "hurt": "damaged"}
# Strip name -> the bad model the scene points at.
MODELS = {"no_vae": "incomplete_model", "pickled": "pickle_weights", "halved": "truncated_weights"}


# -- the Blender session ------------------------------------------------------------

def scenario(args: dict) -> dict:
    import signal
    import time

    events: list[tuple[str, str]] = []
    recording = [False]

    def audit(event: str, detail: tuple) -> None:
        if recording[0] and event.startswith(("socket.", "urllib.", "http.", "subprocess.", "os.system", "os.exec",
                                              "os.posix_spawn", "os.spawn", "webbrowser.")):
            # (executable, args) of a process start; never its environment
            events.append((event, repr(detail[:2] if event == "subprocess.Popen" else detail)[:400]))

    sys.addaudithook(audit)
    import bpy

    assert bpy.ops.extensions.package_install_files(filepath=args["zip"], repo="user_default",
                                                    enable_on_install=True) == {"FINISHED"}
    recording[0] = True  # Blender's own installer runs a subprocess; from here on it is the add-on
    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.python_path, prefs.model_source = args["python"], args["model"]
    session = importlib.import_module(f"{MODULE}.session").SESSION
    operators = importlib.import_module(f"{MODULE}.operators")
    scene = bpy.context.scene
    scene.sequence_editor_create()
    editor = scene.sequence_editor
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences  # 4.4 renamed it
    settings = scene.normalcrafter
    settings.max_res, settings.window, settings.stride, settings.decode_chunk = 64, 4, 3, 2
    settings.output_dir = args["normals"]
    facts: dict = {"jobs": {}}

    def estimate(name: str) -> dict:
        try:
            result = sorted(bpy.ops.normalcrafter.estimate(strips=name))
            error = None
        except RuntimeError as exc:
            result, error = None, str(exc)
        records = [{"state": r.state, "code": r.code, "error": r.error, "result": r.result} for r in session.records]
        return {"result": result, "error": error, "status": list(session.status.lines), "records": records}

    def add(name: str, path: str, channel: int):
        return strips.new_movie(name, path, channel, 1 + 20 * channel)

    for channel, (name, how) in enumerate(DAMAGE.items(), 1):
        path = os.path.join(args["tmp"], f"{name}.mp4")
        original, damaged = args["damaged"].get(how, (args["good"], None))
        shutil.copy(original, path)
        add(name, path, channel)  # Blender reads the intact file's frame count
        if damaged is None:
            os.remove(path)
        else:
            shutil.copy(damaged, path)
        facts["jobs"][name] = estimate(name)
    for channel, (name, how) in enumerate(MODELS.items(), 10):
        add(name, args["good"], channel)
        settings.model = args["models"][how]
        facts["jobs"][name] = estimate(name)
    settings.model = ""
    add("walled", args["good"], 20)
    settings.output_dir = args["unwritable"]
    facts["jobs"]["walled"] = estimate("walled")
    settings.output_dir = args["normals"]
    add("hostile", args["hostile"], 21)
    facts["jobs"]["hostile"] = estimate("hostile")

    # The worker dies mid-job (the non-blocking path, as the modal operator runs).
    add("crash", args["long"], 22)
    plans, _ = operators.gather_plans(bpy.context, "crash", "")
    records = session.submit(plans, operators.worker_config(bpy.context), keep_warm=True, blocking=False)
    while records[0].done < 1 and not records[0].finished:
        session.pump()
        time.sleep(0.02)
    os.kill(session.hello["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while not records[0].finished and time.monotonic() < deadline:
        session.pump()
        time.sleep(0.02)
    facts["crash"] = {"state": records[0].state, "code": records[0].code, "error": records[0].error,
                      "report": operators.summarize(records), "output": plans[0].output_dir,
                      "client": session.client is not None}
    facts["after_crash"] = estimate("crash")
    recording[0] = False
    facts["audit"] = events
    facts["python"] = args["python"]
    session.shutdown()
    return facts


# -- the tests ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def facts(tmp_path_factory, tiny_model) -> dict:
    if importlib.util.find_spec("bpy") is None:  # never imported here: bpy keeps global state
        pytest.skip("needs the bpy module")
    from media import moving_clip, write_video
    from test_reliability_cases import HOSTILE_DIR, bad_cases, sandbox_env

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import build_extension

    tmp = tmp_path_factory.mktemp("addon")
    bad = bad_cases(tmp / "cases", tiny_model)
    hostile = tmp / HOSTILE_DIR
    hostile.mkdir()
    blocker = tmp / "a-file"
    blocker.write_text("not a folder")
    args = {
        "zip": str(build_extension.build(tmp / "dist")),
        "python": sys.executable,
        "model": str(tiny_model),
        "tmp": str(tmp),
        "normals": str(tmp / "normals"),
        "unwritable": str(blocker / "normals"),
        "good": str(write_video(tmp / "good.mp4", moving_clip(6, 40, 64))),
        "long": str(write_video(tmp / "long.mp4", moving_clip(12, 40, 64))),
        "hostile": str(write_video(hostile / "clip #1 $(id).mp4", moving_clip(3, 40, 64))),
        # (the intact file the strip is made from, what then replaces it)
        "damaged": {how: (str(bad["damaged"].input.with_name("intact.mp4") if how == "damaged" else tmp / "good.mp4"),
                          str(bad[how].input)) for how in DAMAGE.values() if how != "missing"},
        "models": {how: str(bad[how].model) for how in MODELS.values()},
        "result": str(tmp / "facts.json"),
    }
    env = {**os.environ, **sandbox_env(tmp / "env"), "BLENDER_USER_RESOURCES": str(tmp / "blender")}
    proc = subprocess.run([sys.executable, __file__, json.dumps(args)], capture_output=True, text=True, env=env,
                          timeout=900, cwd=tmp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return {**json.loads(Path(args["result"]).read_text()), "tmp": tmp, "bad": bad}


@pytest.mark.parametrize("name, code, words", [
    ("missing", None, ["movie file not found"]),
    ("empty", "input_unreadable", ["empty"]),
    ("cut", "input_unreadable", ["truncated"]),
    ("noise", "input_unreadable", ["not a readable video"]),
    ("hurt", "input_unreadable", ["at frame"]),
    ("no_vae", "model_missing", ["incomplete", "vae/"]),
    ("pickled", "model_invalid", ["pickle"]),
    ("halved", "model_invalid", ["corrupt"]),
    ("walled", "output_not_writable", ["not writable"]),
])
def test_bad_input_is_one_report_line(facts, name, code, words):
    job = facts["jobs"][name]
    assert job["result"] is None, job
    assert "Traceback" not in job["error"] and job["error"].strip().count("\n") == 0, job["error"]
    assert all(w in job["error"] for w in words), job["error"]
    assert len(job["status"]) == 1 and f"'{name}'" in job["status"][0], job["status"]
    if code is not None:  # refused by the worker, not by the add-on's own checks
        assert [r["code"] for r in job["records"]] == [code], job["records"]
        out = Path(facts["tmp"]) / "normals" / name
        assert not out.exists() or not [p for p in out.iterdir() if p.name.endswith(".part")]


def test_hostile_path_is_estimated(facts):
    job = facts["jobs"]["hostile"]
    assert job["result"] == ["FINISHED"], job
    assert job["records"][0]["result"]["frames"] == 3
    assert not list(Path(facts["tmp"]).rglob("PWNED"))


def test_a_worker_crash_is_reported_and_survived(facts):
    crash = facts["crash"]
    assert crash["state"] == "failed" and crash["code"] == "worker_died", crash
    assert "killed by signal 9" in crash["error"] and "\n" not in crash["error"]
    [(kind, line)] = crash["report"]
    assert kind == "ERROR" and line.startswith("'crash':") and "killed by signal 9" in line
    assert not crash["client"]  # the dead worker was let go; the next job starts a new one
    after = facts["after_crash"]
    assert after["result"] == ["FINISHED"], after
    result = after["records"][0]["result"]
    assert result["skipped"] >= 1 and result["skipped"] + result["frames"] == 12
    from test_reliability_cases import assert_only_complete_outputs

    assert assert_only_complete_outputs(Path(crash["output"])) == list(range(12))


def test_the_add_on_opens_no_connection_and_no_shell(facts):
    """While installed and working, Blender's process opens no socket and
    starts nothing but the configured interpreter, with an argument list."""
    audit = facts["audit"]
    assert not [e for e in audit if e[0].startswith(("socket.", "urllib.", "http.", "webbrowser."))], audit
    launches = [detail for event, detail in audit if event == "subprocess.Popen"]
    assert launches, "no worker start was seen: the audit hook is not recording"
    python = facts["python"]
    for detail in launches:  # an argument list, never a command line for a shell
        assert detail.startswith(f"({python!r}, [{python!r}, '-m', 'normalcrafter.worker'"), detail
    assert not [e for e in audit if e[0] in ("os.system", "os.posix_spawn") or e[0].startswith("os.exec")], audit


if __name__ == "__main__":
    session_args = json.loads(sys.argv[1])
    with open(session_args["result"], "w") as fh:
        json.dump(scenario(session_args), fh, default=str)
    sys.exit(0)
