"""Command lines: whatever goes wrong, one line on stderr and a meaningful exit code, never a traceback."""

from __future__ import annotations

import pytest

import vizlib  # noqa: F401  (TensorFlow's environment first)
from vizlib.atlas import __main__ as cli
from vizlib.atlas import job
from vizlib.errors import InputError


def _raise(exc):
    def run(*args, **kwargs):
        raise exc
    return run


@pytest.mark.parametrize("command, target", [
    (["build", "--model", "emotion_cnn", "--images", "x", "--out", "y"], "build"),
    (["featvis", "--model", "emotion_cnn", "--out", "y"], "add_featvis"),
])
def test_unexpected_error_is_one_line_exit_1(monkeypatch, capsys, command, target):
    monkeypatch.delenv("CNN_VIZ_DEBUG", raising=False)
    monkeypatch.setattr(job, target, _raise(RuntimeError("disk on fire\nsecond line")))
    assert cli.main(command) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "RuntimeError: disk on fire" in err and "second line" not in err


def test_input_error_is_exit_2_and_names_the_problem(monkeypatch, capsys):
    monkeypatch.setattr(job, "build", _raise(InputError("the images folder is empty")))
    assert cli.main(["build", "--model", "emotion_cnn", "--images", "x", "--out", "y"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: the images folder is empty"


def test_interrupt_says_how_to_resume(monkeypatch, capsys):
    monkeypatch.setattr(job, "build", _raise(KeyboardInterrupt()))
    assert cli.main(["build", "--model", "emotion_cnn", "--images", "x", "--out", "y"]) == 130
    assert "run the same command again" in capsys.readouterr().err


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("CNN_VIZ_DEBUG", "1")
    monkeypatch.setattr(job, "build", _raise(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["build", "--model", "emotion_cnn", "--images", "x", "--out", "y"])


@pytest.mark.parametrize("exc, status, says", [
    (RuntimeError("cache on fire\nsecond line"), 1, "error: unexpected RuntimeError: cache on fire"),
    (PermissionError(13, "Permission denied", "/srv/cache/featvis"), 2,
     "error: cannot use /srv/cache/featvis: Permission denied"),
    (InputError("This model has no layer named 'x'."), 2, "error: This model has no layer named 'x'."),
])
def test_featvis_precompute_has_the_same_error_policy(monkeypatch, capsys, exc, status, says):
    """The second command line goes through the same guard (it used to catch InputError only: anything
    else was a traceback)."""
    from vizlib.atlas import bulk_featvis
    from vizlib.featvis import __main__ as fv_cli

    monkeypatch.delenv("CNN_VIZ_DEBUG", raising=False)
    monkeypatch.setattr(bulk_featvis, "fill_cache", _raise(exc))
    assert fv_cli.main(["precompute", "--model", "emotion_cnn", "--quiet"]) == status
    err = capsys.readouterr().err
    assert err.strip() == says or (status == 1 and err.startswith(says) and "second line" not in err), err
    assert "Traceback" not in err
