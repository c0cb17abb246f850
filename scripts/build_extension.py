#!/usr/bin/env python3
"""Build the Blender extension zip and validate it with Blender's own tools.

    python scripts/build_extension.py [--output-dir dist] [--blender-ext PATH]

Stages ``normalcrafter_blender/`` with ``blender_manifest.toml`` and the
worker's standard-library client (copied in as ``worker_client.py``), then
runs ``blender_ext.py build`` and ``blender_ext.py validate`` from the bpy
wheel (or the file given with --blender-ext; Blender ships it as
``<version>/scripts/addons_core/bl_pkg/cli/blender_ext.py``). Prints the zip's
path; exits non-zero with Blender's message when either step fails.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "normalcrafter_blender"
MANIFEST = ROOT / "blender_manifest.toml"
CLIENT = ROOT / "core" / "src" / "normalcrafter" / "worker" / "client.py"


class BuildError(Exception):
    pass


def find_blender_ext() -> Path:
    """blender_ext.py inside the installed bpy wheel."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("bpy is not installed here; pass --blender-ext PATH/TO/blender_ext.py")
    for location in spec.submodule_search_locations:
        found = sorted(glob.glob(os.path.join(location, "*", "scripts", "addons_core", "bl_pkg", "cli",
                                              "blender_ext.py")))
        if found:
            return Path(found[-1])
    raise BuildError("no blender_ext.py in the bpy package; pass --blender-ext")


def _run(blender_ext: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(blender_ext), *args], capture_output=True, text=True)
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise BuildError(f"blender_ext.py {args[0]} failed:\n{output}")
    return output


def stage(target: Path) -> None:
    """Lay the extension out as the zip will hold it."""
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    shutil.copy2(MANIFEST, target / "blender_manifest.toml")
    if not CLIENT.is_file():
        raise BuildError(f"the worker client is missing: {CLIENT}")
    shutil.copy2(CLIENT, target / "worker_client.py")


def build(output_dir: Path, blender_ext: Path | None = None) -> Path:
    """Build and validate the zip in ``output_dir``; return its path."""
    blender_ext = blender_ext or find_blender_ext()
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="normalcrafter-ext-") as tmp:
        source = Path(tmp) / "normalcrafter"
        stage(source)
        manifest = (source / "blender_manifest.toml").read_text()
        version = next(line.split("=")[1].strip().strip('"') for line in manifest.splitlines()
                       if line.startswith("version"))
        zip_path = output_dir / f"normalcrafter-{version}.zip"
        zip_path.unlink(missing_ok=True)
        _run(blender_ext, "build", "--source-dir", str(source), "--output-filepath", str(zip_path))
    _run(blender_ext, "validate", str(zip_path))
    return zip_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output-dir", type=Path, default=ROOT / "dist", help="where the zip goes (default: dist/)")
    p.add_argument("--blender-ext", type=Path, default=None, help="Blender's blender_ext.py (default: from bpy)")
    args = p.parse_args(argv)
    try:
        print(build(args.output_dir, args.blender_ext))
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
