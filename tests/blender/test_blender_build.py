"""The extension zip: built from the repository, passed by Blender's own validator."""
from __future__ import annotations

import re
import tomllib
import zipfile

import pytest

from blender_harness import ROOT, load_script

build = load_script("build_extension", ROOT / "scripts" / "build_extension.py")

# Blender's process must not import torch, install packages or open connections.
FORBIDDEN = re.compile(r"^\s*(import|from)\s+(torch|pip|urllib|http|socket|requests|ssl)\b", re.MULTILINE)


def test_zip_holds_the_add_on_the_manifest_and_the_worker_client(extension_zip):
    with zipfile.ZipFile(extension_zip) as z:
        names = z.namelist()
        manifest = tomllib.loads(z.read("blender_manifest.toml").decode())
        client = z.read("worker_client.py")
        sources = {n: z.read(n).decode() for n in names if n.endswith(".py")}
    assert {"__init__.py", "blender_manifest.toml", "worker_client.py", "operators.py"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert manifest["id"] == "normalcrafter"
    assert manifest["blender_version_min"] == "4.2.0"
    assert client == (ROOT / "core/src/normalcrafter/worker/client.py").read_bytes()
    offenders = {n: m.group(0).strip() for n, src in sources.items() if (m := FORBIDDEN.search(src))}
    assert not offenders


def test_blender_validator_rejects_a_broken_manifest(extension_zip, tmp_path):
    """The validation step is Blender's and really checks: a tagline ending in
    a full stop (forbidden by the extension rules) fails it."""
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(extension_zip) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "blender_manifest.toml":
                data = re.sub(rb'tagline = "([^"]*)"', rb'tagline = "\1."', data)
            dst.writestr(item, data)
    with pytest.raises(build.BuildError, match="tagline"):
        build._run(build.find_blender_ext(), "validate", str(broken))
