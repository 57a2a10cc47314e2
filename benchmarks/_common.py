"""Shared helpers for the benchmarks: repo on sys.path, quiet TensorFlow, timing, results files.

Every benchmark prints its figures and also writes them to ``benchmarks/out/<name>.json``
(git-ignored), which ``benchmarks/report.py`` turns into the README's results table.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Before TensorFlow is imported anywhere: no INFO/WARNING chatter from the C++ side.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", message="The structure of `inputs`")
warnings.filterwarnings("ignore", category=DeprecationWarning)


def activations_module():
    """The ``vizlib.extract`` module (forward passes and the across-images channel)."""
    return importlib.import_module("vizlib.extract")


def quiet_tf() -> None:
    """Silence TensorFlow's Python-side warnings (e.g. the tutorial path's retracing notices)."""
    import logging

    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)


def now() -> float:
    return time.perf_counter()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def median(xs) -> float:
    xs = list(xs)
    return statistics.median(xs) if xs else float("nan")


def spread(xs) -> str:
    xs = sorted(xs)
    if not xs:
        return "n/a"
    return f"min {xs[0]:.3f} / med {statistics.median(xs):.3f} / max {xs[-1]:.3f}"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:.2f} MB"


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def _sh(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001 - machine info is best effort
        return ""


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    versions = {"python": platform.python_version()}
    for mod in ("numpy", "tensorflow", "keras", "streamlit", "plotly", "PIL"):
        try:
            from importlib.metadata import version

            dist = {"PIL": "pillow"}.get(mod, mod)
            if mod == "tensorflow":
                dist = "tensorflow-cpu"
            versions[mod] = version(dist)
        except Exception:  # noqa: BLE001
            pass
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": _sh(["nproc"]),
        "cpu": cpu,
        "mem": mem_gb,
        "kernel": platform.release(),
        "versions": versions,
    }


_LOAD_AT_START: list[float] = []


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def save(name: str, result: dict[str, Any]) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "machine": machine_info(),
              "loadavg_start": _LOAD_AT_START, "loadavg_end": loadavg(), **result}
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=float))
    print(f"\n[results written to {path.relative_to(ROOT)}]")
    return path


def header(title: str) -> None:
    _LOAD_AT_START[:] = loadavg()
    print("=" * 78)
    print(title)
    print(f"(load average {' '.join(map(str, _LOAD_AT_START))} on {os.cpu_count()} CPUs)")
    print("=" * 78)
