"""Security: no shell, no code from model folders, no network in the add-on,
and a worker that writes only where it was told.

The static checks read the source as syntax trees (a comment or a string
that mentions ``shell=True`` is not a call); each has a positive control, so
a scanner that silently stopped finding things would fail. The runtime
checks use real files: pickles whose unpickling would create a marker file,
model folders baited with remote code, and an audit hook (sys.addaudithook)
inside the real worker process that records every file it writes.
"""
from __future__ import annotations

import ast
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from media import moving_clip, write_video
from normalcrafter.errors import NormalCrafterError
from test_reliability_cases import FAST, one_torch_thread, read_exr_fully, sandbox_env

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "core" / "src" / "normalcrafter"
ADDON = ROOT / "normalcrafter_blender"
CLIENT = PACKAGE / "worker" / "client.py"  # copied into the add-on as worker_client.py
SCRIPTS = ROOT / "scripts"


def python_files(*roots: Path) -> list[Path]:
    return sorted(p for r in roots for p in ([r] if r.is_file() else r.rglob("*.py")) if "__pycache__" not in p.parts)


def dotted(node: ast.AST) -> str:
    """``a.b.c`` for a Name/Attribute chain, else ''."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


SHELL_CALLS = {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput", "commands.getoutput"}
CODE_CALLS = {"eval", "exec"}
PICKLE_CALLS = {"pickle.load", "pickle.loads", "cPickle.load", "cPickle.loads", "marshal.load", "marshal.loads",
                "dill.load", "dill.loads", "joblib.load", "shelve.open", "yaml.unsafe_load", "pd.read_pickle",
                "pandas.read_pickle"}
# Loaders of configs only (no weights); our own pipeline goes through model.loading.
CONFIG_ONLY = {"CLIPImageProcessor", "EulerDiscreteScheduler", "NormalCrafterPipeline"}


def shell_findings(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        shell = keyword(node, "shell")
        if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
            found.append(f"{name}(shell=...) at line {node.lineno}")
        if name in SHELL_CALLS:
            found.append(f"{name} at line {node.lineno}")
        if name in CODE_CALLS:
            found.append(f"{name}() at line {node.lineno}")
    return found


def _safetensors_dicts(tree: ast.AST) -> set[str]:
    """Names assigned a dict literal holding "use_safetensors": True."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            for k, v in zip(node.value.keys, node.value.values):
                if isinstance(k, ast.Constant) and k.value == "use_safetensors" and is_true(v):
                    names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def unsafe_load_findings(tree: ast.AST) -> list[str]:
    found = []
    safe_kwargs = _safetensors_dicts(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = dotted(node.func)
            where = f"at line {node.lineno}"
            if name in PICKLE_CALLS:
                found.append(f"{name} {where}")
            if name == "yaml.load" and "Safe" not in ast.unparse(keyword(node, "Loader") or ast.Constant(None)):
                found.append(f"yaml.load without SafeLoader {where}")
            if name.endswith("torch.load") and not is_true(keyword(node, "weights_only")):
                found.append(f"torch.load without weights_only=True {where}")
            allow_pickle = keyword(node, "allow_pickle")
            if allow_pickle is not None and ast.unparse(allow_pickle) != "False":
                found.append(f"{name}(allow_pickle=...) {where}")
            if is_true(keyword(node, "trust_remote_code")):
                found.append(f"trust_remote_code=True {where}")
            if name.endswith(".from_pretrained") and name.split(".")[-2] not in CONFIG_ONLY:
                spread = {k.value.id for k in node.keywords if k.arg is None and isinstance(k.value, ast.Name)}
                if not is_true(keyword(node, "use_safetensors")) and not spread & safe_kwargs:
                    found.append(f"{name} without use_safetensors=True {where}")
    return found


NETWORK_MODULES = {"socket", "ssl", "urllib", "urllib3", "http", "requests", "httpx", "aiohttp", "ftplib", "smtplib",
                   "poplib", "imaplib", "telnetlib", "xmlrpc", "websocket", "websockets", "asyncio", "webbrowser",
                   "huggingface_hub"}


def network_findings(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and dotted(node.func) in ("importlib.import_module", "__import__"):
            arg = node.args[0] if node.args else None
            names = [arg.value] if isinstance(arg, ast.Constant) else ["<a computed module name>"]
        elif isinstance(node, ast.Attribute) and node.attr == "url_open":
            found.append(f"bpy.ops.wm.url_open at line {node.lineno}")
        found += [f"import {n} at line {node.lineno}" for n in names
                  if n.split(".")[0] in NETWORK_MODULES or n.startswith("<")]
    return found


def scan(files: list[Path], check) -> dict[str, list[str]]:
    out = {}
    for path in files:
        hits = check(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        if hits:
            out[str(path.relative_to(ROOT))] = hits
    return out


def test_the_scanners_find_what_they_look_for():
    bad = ast.parse(textwrap.dedent("""
        import os, subprocess, pickle, torch, numpy as np, yaml
        import socket
        from urllib.request import urlopen
        import importlib
        subprocess.run(cmd, shell=True)
        subprocess.Popen(cmd, shell=flag)
        os.system("ls")
        os.popen("ls")
        eval(text)
        pickle.loads(data)
        torch.load(path)
        torch.load(path, weights_only=False)
        np.load(path, allow_pickle=True)
        yaml.load(text)
        AutoModel.from_pretrained(source, trust_remote_code=True)
        CLIPVisionModel.from_pretrained(source)
        importlib.import_module(name)
        bpy.ops.wm.url_open(url="https://example.com")
    """))
    assert len(shell_findings(bad)) == 5
    assert len(unsafe_load_findings(bad)) == 8  # the AutoModel line twice
    assert len(network_findings(bad)) == 4
    good = ast.parse(textwrap.dedent("""
        subprocess.run([exe, "-m", "x"], shell=False)
        model.eval()
        torch.load(path, map_location="cpu", weights_only=True)
        np.load(path, allow_pickle=False)
        common = {"use_safetensors": True}
        UNet.from_pretrained(path, **common)
        CLIPImageProcessor.from_pretrained(path)
    """))
    assert not shell_findings(good) and not unsafe_load_findings(good) and not network_findings(good)


def test_no_shell_and_no_eval_anywhere():
    """User strings (paths, names) reach subprocesses only as argument lists."""
    assert scan(python_files(PACKAGE, ADDON, SCRIPTS), shell_findings) == {}


def test_nothing_unpickles_or_runs_model_code():
    assert scan(python_files(PACKAGE, ADDON, SCRIPTS), unsafe_load_findings) == {}


def test_the_add_on_has_no_network_code():
    """Blender's process only talks to its worker through pipes; downloads
    happen in the worker, and only when the user asks."""
    assert scan(python_files(ADDON, CLIENT), network_findings) == {}


def test_downloads_fetch_only_safetensors_and_json():
    from normalcrafter.worker.download import plan

    for model in ("Yanrui95/NormalCrafter", "someone/other-model"):
        for _, patterns in plan(model):
            assert all(p.endswith((".json", ".safetensors")) for p in patterns), patterns


# -- model folders that try to run code -----------------------------------------------

class Bait:
    """Unpickling this creates ``marker``: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def bait_model(tiny_model: Path, dest: Path, marker: Path, keep_safetensors: bool = True) -> Path:
    """The tiny model plus pickles beside (or instead of) every weight file,
    and remote-code hooks (auto_map, custom classes, a .py file) in its configs."""
    shutil.copytree(tiny_model, dest)
    payload = pickle.dumps(Bait(marker))
    for sub in ("unet", "vae", "image_encoder"):
        for st in (dest / sub).glob("*.safetensors"):
            for name in (st.with_suffix(".bin").name, st.with_suffix(".fp16.bin").name, "model.ckpt", "weights.pt"):
                (dest / sub / name).write_bytes(payload)
            if not keep_safetensors:
                st.unlink()
    (dest / "model.pkl").write_bytes(payload)
    code = f"open({str(marker)!r}, 'w').close()\n"
    for folder in (dest, *(p for p in dest.iterdir() if p.is_dir())):
        (folder / "evil.py").write_text(code)
        (folder / "pipeline.py").write_text(code)
    for config in dest.rglob("*.json"):
        data = json.loads(config.read_text())
        if isinstance(data, dict):
            data["auto_map"] = {k: "evil.Evil" for k in ("AutoConfig", "AutoModel", "AutoImageProcessor")}
            config.write_text(json.dumps(data))
    index = json.loads((dest / "model_index.json").read_text())
    index["_class_name"] = ["evil", "EvilPipeline"]
    (dest / "model_index.json").write_text(json.dumps(index))
    return dest


def test_the_bait_works(tmp_path):
    """The control: unpickling the bait in a fresh process does create the marker."""
    marker = tmp_path / "marker"
    payload = pickle.dumps(Bait(marker))
    subprocess.run([sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"],
                   input=payload, check=True)
    assert marker.exists()


def test_model_loading_never_runs_code_from_the_model_folder(tiny_model, tmp_path):
    from normalcrafter.job import EstimateSettings, run_estimate

    marker = tmp_path / "marker"
    model = bait_model(tiny_model, tmp_path / "model", marker)
    clip = write_video(tmp_path / "clip.mp4", moving_clip(2, 32, 64))
    with one_torch_thread():
        result = run_estimate(clip, tmp_path / "out", EstimateSettings(model=str(model), **FAST))
    assert result["frames"] == 2 and read_exr_fully(tmp_path / "out" / "normal.00001.exr").shape == (32, 64, 3)
    assert not marker.exists()
    assert "evil" not in sys.modules


def test_pickle_only_weights_are_refused_unread(tiny_model, tmp_path):
    from normalcrafter.model.loading import load_components

    marker = tmp_path / "marker"
    model = bait_model(tiny_model, tmp_path / "model", marker, keep_safetensors=False)
    with pytest.raises(NormalCrafterError) as info:
        load_components(str(model))
    assert info.value.code == "model_invalid" and "pickle" in info.value.message
    assert not marker.exists()


# -- what the worker writes ----------------------------------------------------------------

AUDIT_HOOK = '''
"""Records every file write, removal, rename, process start and connection
of this interpreter to $NC_AUDIT_LOG (tests/test_security.py)."""
import os
import sys

_log = os.environ.get("NC_AUDIT_LOG")
if _log:
    _fd = os.open(_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)  # os.write is not audited
    _WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    _PATHS = {"os.rename": 2, "os.link": 2, "os.symlink": 2, "os.remove": 1, "os.rmdir": 1, "os.mkdir": 1,
              "os.truncate": 1, "os.chmod": 1, "os.chown": 1, "os.utime": 1, "shutil.rmtree": 1, "shutil.move": 2,
              "shutil.copyfile": 2}

    def _hook(event, args):
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int) or path is None:
                return
            if mode is not None and not any(c in mode for c in "wax+") or mode is None and not flags & _WRITE:
                return
            paths = [path]
        elif event in _PATHS:
            paths = [p for p in args[: _PATHS[event]] if not isinstance(p, int)]
        elif event in ("socket.connect", "socket.getaddrinfo", "socket.sendto", "subprocess.Popen", "os.system",
                       "os.exec", "os.posix_spawn", "os.spawn"):
            paths = [f"{event} {args!r}"[:300]]
        else:
            return
        for p in paths:
            line = f"{event}\\t{os.fsdecode(p) if isinstance(p, (str, bytes)) else p}\\n"
            os.write(_fd, line.encode("utf-8", "backslashreplace"))

    sys.addaudithook(_hook)
'''


def test_the_worker_writes_only_inside_the_output_folder(tiny_model, tmp_path):
    """A real job in a real worker whose every write is recorded: outputs go
    to the folder given, the log to its log folder, library scratch files to
    its private temp folder; nothing lands beside the input, in the model
    folder, in the working directory or anywhere else."""
    from normalcrafter.worker.client import WorkerClient

    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(AUDIT_HOOK)
    scratch, cwd, out, log = tmp_path / "scratch", tmp_path / "cwd", tmp_path / "out dir $x", tmp_path / "audit.log"
    scratch.mkdir()
    cwd.mkdir()
    inp = tmp_path / "input"
    inp.mkdir()
    clip = write_video(inp / "clip.mp4", moving_clip(3, 32, 64))
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    # torch puts its compile cache in the temp folder, and records the choice in
    # os.environ, which the worker would inherit from this process.
    env = {**sandbox_env(tmp_path / "env"), "PYTHONPATH": str(hook_dir), "NC_AUDIT_LOG": str(log),
           "TMPDIR": str(scratch), "TORCHINDUCTOR_CACHE_DIR": str(scratch / "torchinductor")}
    client = WorkerClient(sys.executable, env=env)
    start = os.getcwd()
    os.chdir(cwd)  # the worker inherits it
    try:
        client.start()
    finally:
        os.chdir(start)
    try:
        job = {"input": str(clip), "output_dir": str(out), "model": str(model), **FAST, "job": "../../x"}
        done = client.wait(client.submit(job), timeout=600)
    finally:
        client.stop()
    assert done["result"]["frames"] == 3
    records = [line.split("\t", 1) for line in log.read_text().splitlines()]
    assert any(event == "os.rename" and path == str(out / "normal.00002.exr") for event, path in records)
    allowed = (out, scratch, tmp_path / "env")  # env: the log folder
    written = [(event, cwd / path) for event, path in records  # relative paths are the worker's cwd's
               if event in ("open", "os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.link", "os.symlink")]
    stray = [(event, str(path)) for event, path in written
             if str(path) != os.devnull and not any(path.is_relative_to(a) for a in allowed)]
    assert stray == [], stray
    assert not [r for r in records if r[0].startswith("socket.")], "the worker reached for the network"
    launched = [path for event, path in records if event == "subprocess.Popen"]
    assert all("shell" not in p and "'/bin/sh'" not in p for p in launched), launched
    assert sorted(p.name for p in inp.iterdir()) == ["clip.mp4"] and not list(cwd.iterdir())


def test_planted_links_are_never_written_through(tiny_model, tmp_path):
    """A link planted under a temporary's name is deleted, not followed; a
    frame of unknown origin (here a link to a file elsewhere) is refused."""
    from normalcrafter.job import EstimateSettings, run_estimate

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    clip = write_video(tmp_path / "clip.mp4", moving_clip(2, 32, 64))
    out = tmp_path / "out"
    out.mkdir()
    (out / f".normal.00000.exr.{os.getpid()}.part").symlink_to(victim)
    (out / f".normalcrafter_job.json.{os.getpid()}.part").symlink_to(victim)
    settings = EstimateSettings(model=str(tiny_model), **FAST)
    with one_torch_thread():
        assert run_estimate(clip, out, settings)["frames"] == 2
    assert victim.read_text() == "precious"
    assert not [p for p in out.iterdir() if p.is_symlink()]

    other = tmp_path / "other"
    other.mkdir()
    (other / "normal.00000.exr").symlink_to(victim)
    with pytest.raises(NormalCrafterError) as info:
        run_estimate(clip, other, settings)
    assert info.value.code == "output_conflict" and "no normalcrafter_job.json" in info.value.message
    assert victim.read_text() == "precious"
