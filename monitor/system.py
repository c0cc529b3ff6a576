"""Figures about this host and its processes, read with psutil. Plain dicts,
the same for the JSON API and the monitor page."""

from __future__ import annotations

import os
import platform
import socket
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from django.conf import settings

_cpu_lock = threading.Lock()
_cpu_cache: dict[str, Any] = {"at": None, "value": None}


def cpu_usage() -> tuple[float, list[float]]:
    """CPU percent, total and per core. psutil measures since its previous
    call; requests that come within a second share one reading, so that two
    quick requests do not measure a few milliseconds."""
    with _cpu_lock:
        now = time.monotonic()
        if _cpu_cache["at"] is None:
            # First call in this process: there is no earlier reading yet.
            psutil.cpu_percent(interval=None)
            psutil.cpu_percent(interval=None, percpu=True)
            time.sleep(0.1)
        elif now - _cpu_cache["at"] < 1.0:
            return _cpu_cache["value"]
        value = (
            psutil.cpu_percent(interval=None),
            psutil.cpu_percent(interval=None, percpu=True),
        )
        _cpu_cache.update(at=time.monotonic(), value=value)
        return value


def _disk(path: Path) -> dict[str, Any]:
    usage = psutil.disk_usage(str(path))
    return {
        "path": str(path),
        "total": usage.total,
        "used": usage.used,
        "free": usage.free,
        "percent": usage.percent,
    }


def _volumes() -> list[dict[str, Any]]:
    """Disk use of the volumes that hold DATA_DIR and TASKS_DIR (one entry
    when both are on the same device)."""
    seen: dict[int, dict[str, Any]] = {}
    for label, folder in (("DATA_DIR", settings.DATA_DIR), ("TASKS_DIR", settings.TASKS_DIR)):
        folder = Path(folder)
        try:
            device = folder.stat().st_dev
            entry = seen.get(device)
            if entry is None:
                entry = seen[device] = {**_disk(folder), "holds": []}
            entry["holds"].append(label)
        except OSError:
            continue
    return list(seen.values())


def host_info() -> dict[str, Any]:
    """The host as a whole: CPU, load, memory, swap, disks, uptime."""
    total, per_core = cpu_usage()
    memory = psutil.virtual_memory()
    swap = psutil.swap_memory()
    try:
        load = list(os.getloadavg())
    except OSError:  # not on every platform
        load = None
    volumes = _volumes()
    boot = psutil.boot_time()
    return {
        "host": settings.WORKER_HOST,
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": {
            "percent": total,
            "per_core": per_core,
            "count": psutil.cpu_count() or len(per_core),
            "physical": psutil.cpu_count(logical=False),
            "load": load,
        },
        "memory": {
            "total": memory.total,
            "available": memory.available,
            "used": memory.total - memory.available,
            "percent": memory.percent,
        },
        "swap": {"total": swap.total, "used": swap.used, "percent": swap.percent},
        # "disk" is the volume of DATA_DIR (the database and logs); "disks"
        # also lists TASKS_DIR's when it is elsewhere.
        "disk": volumes[0] if volumes else None,
        "disks": volumes,
        "boot_time": boot,
        "uptime": time.time() - boot,
    }


def _process_fields(proc: psutil.Process) -> dict[str, Any]:
    with proc.oneshot():
        memory = proc.memory_info()
        return {
            "pid": proc.pid,
            "ppid": proc.ppid(),
            "name": proc.name(),
            "cmdline": proc.cmdline(),
            "username": _safe(proc.username),
            "status": proc.status(),
            "cpu_percent": proc.cpu_percent(interval=None),
            "rss": memory.rss,
            "vms": memory.vms,
            "threads": proc.num_threads(),
            "started": proc.create_time(),
        }


def _safe(read):
    try:
        return read()
    except (psutil.Error, OSError, KeyError):
        return None


def this_process() -> dict[str, Any]:
    proc = psutil.Process()
    data = _process_fields(proc)
    data["uptime"] = time.time() - data["started"]
    data["open_files"] = len(_safe(proc.open_files) or [])
    data["connections"] = len(_safe(proc.net_connections) or [])
    return data


def _is_python(proc: psutil.Process) -> bool:
    try:
        name = proc.name().lower()
        if name.startswith("python"):
            return True
        cmdline = proc.cmdline()
    except (psutil.Error, OSError):
        return False
    return bool(cmdline) and "python" in os.path.basename(cmdline[0]).lower()


def _role(proc: psutil.Process, cmdline: list[str], run_id: int | None) -> str:
    if run_id is not None:
        return "script"
    if proc.pid == os.getpid():
        return "this process"
    text = " ".join(cmdline)
    if "qcluster" in text:
        return "cluster"
    if "serve" in cmdline:
        return "web + cluster"
    if "gunicorn" in text or "runserver" in text:
        return "web"
    return ""


def python_processes() -> list[dict[str, Any]]:
    """The Python processes on this host (those we may read), each with the
    run it belongs to when it is a run's script or one of its children."""
    found = []
    # process_iter keeps its Process objects between calls, so cpu_percent is
    # measured since the previous listing (0.0 the first time a process is seen).
    for proc in psutil.process_iter():
        if not _is_python(proc):
            continue
        try:
            data = _process_fields(proc)
        except (psutil.Error, OSError):
            continue
        if data["status"] == psutil.STATUS_ZOMBIE:
            continue  # ended, waiting to be reaped: nothing left to show
        environ = _safe(proc.environ) or {}
        run_id = environ.get("TASKRUN_RUN_ID")
        data["run_id"] = int(run_id) if run_id and run_id.isdigit() else None
        data["task"] = environ.get("TASKRUN_TASK") if data["run_id"] else None
        data["role"] = _role(proc, data["cmdline"], data["run_id"])
        found.append(data)
    _mark_descendants(found)
    found.sort(key=lambda p: (p["run_id"] is None, -p["rss"]))
    return found


def _mark_descendants(found: list[dict[str, Any]]) -> None:
    """A script's child started with an environment of its own has no
    TASKRUN_RUN_ID: it still belongs to the run of its nearest marked ancestor."""
    marked = {p["pid"]: p for p in found if p["run_id"] is not None}
    if not marked:
        return
    for data in found:
        if data["run_id"] is not None:
            continue
        try:
            ancestors = psutil.Process(data["pid"]).parents()
        except psutil.Error:
            continue
        for ancestor in ancestors:
            owner = marked.get(ancestor.pid)
            if owner is not None:
                data.update(run_id=owner["run_id"], task=owner["task"], role="script")
                break
