"""Server start-up: warm the process before it takes its first visitor; ``/ready`` says it is.

``app.py`` serves itself as an ``st.App`` whose lifespan calls :func:`lifespan`
once per server process, after Streamlit's runtime has started and before the
server accepts connections. It imports TensorFlow and Keras, loads the bundled
model and computes the default view (:func:`ui.caches.warm_start`): 4-7 s on
a small machine that the first visitor no longer waits for. The server starts
listening (and ``/_stcore/health`` answers) only when that is done, so a load
balancer sends no one to a cold process and ``streamlit run`` opens the
browser on a warm one.

Why not in the background while the server already listens: a visitor's first
page run then imports modules (pandas, through Streamlit's charts) while the
warm-up thread is inside TensorFlow's imports, and Python's import deadlock
avoidance hands one thread a half-initialised module ("partially initialized
module 'pandas' has no attribute 'Series'"): seen in CI.

``GET /ready`` answers 200 once the process is warm and 503 before (JSON
either way): with ``st.App`` that is whenever the server answers at all; under
other hosts (a bare Streamlit server) it says whether a visit has warmed it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

log = logging.getLogger("cnn_viz")


def keep_keras_session() -> bool:
    """Stop Streamlit calling ``keras.backend.clear_session()`` after every run: once, at server start.

    Streamlit's script runner calls its module function
    ``_clean_problem_modules`` after each script run *and each fragment run*:
    it clears Keras' session (and with it TensorFlow's eager kernel cache, so
    every compiled function is instantiated again on its next call) and
    closes matplotlib figures. With the feature-visualisation progress
    fragment polling every second, a running optimisation slowed about tenfold
    (bundled model: the first image after 215 s instead of 24 s,
    benchmarks/README.md). The app builds Keras models only in bounded caches,
    so the reset buys nothing here. Streamlit offers no setting for this, so
    the function is replaced once per process, before any page runs (from
    :func:`lifespan`), and the process behaves the same from its first run to
    its last. The replacement keeps the matplotlib part.
    ``tests/test_startup_cleanup.py`` fails when a Streamlit upgrade changes
    that internal (its name, its caller, or what it cleans). Returns whether
    the cleanup is now Keras-free.
    """
    try:
        from streamlit.runtime.scriptrunner import script_runner
    except ImportError:  # pragma: no cover - another Streamlit layout: the test says so
        return False
    current = getattr(script_runner, "_clean_problem_modules", None)
    if current is None:
        return False
    if getattr(current, "keeps_keras_session", False):
        return True

    def clean_problem_modules() -> None:
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is not None:
            try:
                plt.close("all")
            except Exception:  # noqa: BLE001 - as Streamlit: never fail a run over this
                pass

    clean_problem_modules.keeps_keras_session = True  # type: ignore[attr-defined]
    script_runner._clean_problem_modules = clean_problem_modules
    return True


def warm() -> float:
    """Import TensorFlow, load the bundled model, compute the default view; seconds taken."""
    from ui import caches

    start = time.monotonic()
    caches.warm_start()
    return time.monotonic() - start


@asynccontextmanager
async def lifespan(_app: Any) -> AsyncIterator[None]:
    print("Starting TensorFlow and loading the bundled model before taking visitors (a few seconds)…",
          file=sys.stderr, flush=True)
    keep_keras_session()
    try:
        seconds = await asyncio.to_thread(warm)
    except Exception:  # noqa: BLE001 - the server still starts; the first page run retries and says why
        log.exception("warm-up at server start failed; the first visit will retry it")
    else:
        print(f"Ready: TensorFlow and the bundled model loaded in {seconds:.1f} s.", file=sys.stderr, flush=True)
    yield


async def ready(_request: Any) -> Any:
    from starlette.responses import JSONResponse

    from ui import caches

    is_warm = caches.is_warm()
    return JSONResponse({"warm": is_warm}, status_code=200 if is_warm else 503,
                        headers={"Cache-Control": "no-store"})


def routes() -> list:
    from starlette.routing import Route

    return [Route("/ready", ready, methods=["GET"])]
