"""The one rule for optional engines and tools: skip on a developer machine, fail in CI (which installs them)."""

from __future__ import annotations

import pytest

import optional


def test_missing_skips_here_and_fails_in_ci(monkeypatch):
    monkeypatch.setattr(optional, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="Ray is not installed"):
        optional.missing("Ray is not installed")
    monkeypatch.setattr(optional, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI installs it"):
        optional.missing("Ray is not installed")
