"""TensorFlow process set-up in one place and every environment variable read in one place (issue #19)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _environment_reads(path: Path) -> list[int]:
    """Lines of ``path`` that read or write ``os.environ`` / ``os.getenv`` / ``os.putenv``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv", "unsetenv") \
                and isinstance(node.value, ast.Name) and node.value.id in ("os", "_os"):
            lines.append(node.lineno)
    return lines


def test_only_settings_and_tfsetup_touch_the_environment():
    allowed = {REPO / "vizlib" / "settings.py", REPO / "vizlib" / "tfsetup.py"}
    offenders = {}
    for path in sorted([*(REPO / "vizlib").rglob("*.py"), *(REPO / "ui").rglob("*.py"), REPO / "app.py"]):
        if path in allowed:
            continue
        found = _environment_reads(path)
        if found:
            offenders[str(path.relative_to(REPO))] = found
    assert offenders == {}


def test_importing_vizlib_turns_onednn_off_before_tensorflow_and_respects_a_choice():
    code = "import os, vizlib, tensorflow; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))"
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "0"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "TF_ENABLE_ONEDNN_OPTS": "1"}, cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "1"


def test_a_worker_takes_the_drivers_thread_count(monkeypatch):
    from vizlib import tfsetup

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert tfsetup.thread_count() == "3"
    tfsetup.use_thread_count("2")
    assert os.environ["OMP_NUM_THREADS"] == "2"
    tfsetup.use_thread_count(None)
    assert "OMP_NUM_THREADS" not in os.environ


def test_tensorflows_retracing_warning_about_our_step_functions_is_filtered_once():
    import logging

    from vizlib import tfsetup

    tfsetup.configure_process()
    tfsetup.configure_process()
    logger = logging.getLogger("tensorflow")
    assert logger.filters.count(tfsetup._FILTER) == 1
    ours = logging.LogRecord("tensorflow", logging.WARNING, __file__, 1,
                             "5 out of the last 5 calls to %s triggered tf.function retracing.",
                             ("<function compile_step.<locals>.step at 0x1>",), None)
    other = logging.LogRecord("tensorflow", logging.WARNING, __file__, 1,
                              "5 out of the last 5 calls to %s triggered tf.function retracing.",
                              ("<function my_model_fn at 0x1>",), None)
    assert not logger.filter(ours) and logger.filter(other)
