"""Gradients only where they are safe: with TensorFlow 2.21 on CPU and oneDNN on, some input gradients
corrupt the heap and abort the process (:mod:`vizlib.tfsetup` turns oneDNN off before TensorFlow loads)."""

from __future__ import annotations

from vizlib import tfsetup  # noqa: F401 - oneDNN off if TensorFlow isn't loaded yet
from vizlib.settings import allow_onednn_gradients, onednn_requested

__all__ = ["GradientsUnsafe", "check_gradients_safe", "onednn_enabled"]


class GradientsUnsafe(RuntimeError):
    """TensorFlow runs with oneDNN on, where input gradients can abort the process (see the module doc)."""


def onednn_enabled() -> bool:
    """Whether the running TensorFlow uses oneDNN kernels (as decided when it was imported)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except Exception:  # noqa: BLE001 - a TensorFlow without this probe: trust the environment
        return onednn_requested()
    return bool(_pywrap_util_port.IsMklEnabled())


def check_gradients_safe() -> None:
    """Raise :class:`GradientsUnsafe` when input gradients could abort the process (oneDNN on)."""
    if allow_onednn_gradients():
        return
    if onednn_enabled():
        raise GradientsUnsafe(
            "TensorFlow was imported with oneDNN on, and on TensorFlow 2.21 / CPU some gradients then "
            "corrupt memory and abort the process. Import vizlib before tensorflow or keras (it turns "
            "oneDNN off), or set TF_ENABLE_ONEDNN_OPTS=0 before starting Python."
        )

