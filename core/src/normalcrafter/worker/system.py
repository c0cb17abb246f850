"""What this worker can run on, for the handshake: interpreter, torch,
devices and their free memory."""
from __future__ import annotations

import os
import platform
import sys

import psutil
import torch

from .. import __version__


def _cuda_devices() -> list[dict]:
    devices = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        try:
            free, total = torch.cuda.mem_get_info(i)
        except RuntimeError:  # a device that is listed but cannot be opened (busy, exclusive mode)
            free, total = None, props.total_memory
        devices.append({
            "id": f"cuda:{i}",
            "name": props.name,
            "total_bytes": total,
            "free_bytes": free,
            "capability": f"{props.major}.{props.minor}",
        })
    return devices


def describe_system() -> dict:
    ram = psutil.virtual_memory()
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    devices = _cuda_devices() if cuda else []
    if mps:
        devices.append({"id": "mps", "name": "Apple GPU", "total_bytes": ram.total, "free_bytes": ram.available})
    devices.append({
        "id": "cpu",
        "name": platform.processor() or platform.machine(),
        "total_bytes": ram.total,
        "free_bytes": ram.available,
        "threads": torch.get_num_threads(),
    })
    return {
        "version": __version__,
        "pid": os.getpid(),
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": {"available": cuda, "version": torch.version.cuda},
        "mps": mps,
        "default_device": "cuda:0" if cuda else "cpu",  # what device "auto" picks (pipeline.resolve_device)
        "devices": devices,
    }
