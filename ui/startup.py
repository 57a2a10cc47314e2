"""Server start-up: warm the process before the first visitor arrives; ``/ready`` says when it is.

``app.py`` serves itself as an ``st.App`` whose lifespan calls :func:`lifespan`
once per server process, after Streamlit's runtime has started and before the
first connection is served. Importing TensorFlow and Keras and loading the
bundled model take 4-7 s on a small machine; done here, in a background
thread, the server answers at once (health checks pass, the page's skeleton
paints) and a visitor who arrives during the warm-up waits only for what is
left of it (:func:`ui.caches.warm_start` is one ``st.cache_resource`` entry:
a second caller waits for the first).

``GET /ready`` answers 200 once the process is warm and 503 before (JSON
either way), for a load balancer or a script that wants to send visitors only
to warm processes; Streamlit's own ``/_stcore/health`` answers 200 as soon as
the server listens.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

log = logging.getLogger("cnn_viz")


def _warm() -> None:
    from ui import caches

    start = time.monotonic()
    try:
        caches.warm_start()
    except Exception:  # noqa: BLE001 - the first page run retries and shows the error
        log.exception("warm-up at server start failed; the first visit will retry it")
    else:
        log.info("warm: TensorFlow and the bundled model ready %.1f s after server start",
                 time.monotonic() - start)


@asynccontextmanager
async def lifespan(_app: Any) -> AsyncIterator[None]:
    threading.Thread(target=_warm, name="cnn-viz-warm-up", daemon=True).start()
    yield


async def ready(_request: Any) -> Any:
    from starlette.responses import JSONResponse

    from ui import caches

    warm = caches.is_warm()
    return JSONResponse({"warm": warm}, status_code=200 if warm else 503,
                        headers={"Cache-Control": "no-store"})


def routes() -> list:
    from starlette.routing import Route

    return [Route("/ready", ready, methods=["GET"])]
