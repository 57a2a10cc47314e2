"""TensorFlow process set-up, in one place: what must be true of a process before TensorFlow loads.

* **oneDNN off** (``TF_ENABLE_ONEDNN_OPTS=0``, unless the user chose otherwise):
  with TensorFlow 2.21 on CPU and oneDNN on, some input gradients (a 1x1
  stride-2 convolution on an even-sized input, as in the bundled model) corrupt
  the heap and abort the process. Forward passes cost about the same either way
  (benchmarks/README.md). Importing :mod:`vizlib` (or this module) does it.
* **WebRTC's OpenSSL before TensorFlow's**: once TensorFlow 2.21 is loaded,
  importing ``pylibsrtp`` (aiortc's SRTP, used by the live camera view)
  segfaults the process; loaded first, both work. So it is preloaded here when
  installed (a few ms).
* **TensorFlow's log**: its "frequent retracing" warning about vizlib's own
  feature-visualisation step functions is dropped (one step function is
  compiled per model, layer and image size, each traced once; TensorFlow counts
  them together and warns as if one were retraced). Other warnings pass.
* **A command line's log** (:func:`quiet_command_line`): TensorFlow's C++
  start-up lines are silenced unless the user set ``TF_CPP_MIN_LOG_LEVEL``.
* **Thread count of a worker** (:func:`use_thread_count`): Ray sets
  ``OMP_NUM_THREADS`` from a task's CPU share; a worker computing what the
  driver computes takes the driver's setting, so TensorFlow uses the same
  threads and its sums round the same way.

The environment variables themselves are named and read in :mod:`vizlib.settings`.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional

from vizlib.settings import ONEDNN_VAR, TF_LOG_VAR, THREADS_VAR

__all__ = ["configure_process", "quiet_command_line", "thread_count", "use_thread_count"]


class _OwnTracingNoise(logging.Filter):
    """Drop TensorFlow's "frequent retracing" warning about vizlib's feature-visualisation step functions."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not ("triggered tf.function retracing" in text and "compile_step.<locals>" in str(record.args or "")
                    + text)


_FILTER = _OwnTracingNoise()


def quiet_command_line() -> None:
    """For a command line: TensorFlow's C++ start-up lines (CPU features, absl) would come before the one line
    a user should read; silence them unless the user chose a level (a no-op once TensorFlow is loaded)."""
    os.environ.setdefault(TF_LOG_VAR, "2")


def configure_process() -> None:
    """Set the environment TensorFlow reads at import (a no-op once TensorFlow is loaded); filter its log."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault(ONEDNN_VAR, "0")
        try:
            import pylibsrtp  # noqa: F401  (its OpenSSL must load before TensorFlow's: see above)
        except ImportError:
            pass
    logger = logging.getLogger("tensorflow")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


def thread_count() -> Optional[str]:
    """This process's ``OMP_NUM_THREADS`` (None if unset): what a worker should copy."""
    from vizlib.settings import omp_num_threads

    return omp_num_threads()


def use_thread_count(value: Optional[str]) -> None:
    """In a worker, before TensorFlow loads: take the driver's ``OMP_NUM_THREADS`` (None: unset it)."""
    if value:
        os.environ[THREADS_VAR] = str(value)
    else:
        os.environ.pop(THREADS_VAR, None)


configure_process()
