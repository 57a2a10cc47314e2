"""Optional engines and tools (Ray, Chromium, HAProxy, Playwright): a test that needs one skips on a
developer machine without it, and fails in CI, which installs them all (`.ci/run`), so CI never skips."""

from __future__ import annotations

import os

import pytest

IN_CI = bool(os.environ.get("CI"))


def missing(message: str, *, module_level: bool = False) -> None:
    """``message`` names what is missing and how to install it: skip here, fail in CI."""
    if IN_CI:
        pytest.fail(f"{message} (CI is set: CI installs it, so these tests must run)", pytrace=False)
    pytest.skip(message, allow_module_level=module_level)


def require_ray(*, module_level: bool = False) -> None:
    """Ray (with Ray Data) is importable, or :func:`missing` says how to install it."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        missing('Ray is not installed (pip install -r requirements-ray.txt); the Ray engine is optional',
                module_level=module_level)
