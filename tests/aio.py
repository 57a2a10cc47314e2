"""Running a coroutine from a test, whatever else the session runs.

The browser tests' Playwright driver (session-scoped, sync API) keeps an asyncio event loop
running in the main thread for the rest of the session, and ``asyncio.run`` refuses to start
inside it. A coroutine a unit test needs therefore runs in a thread of its own.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable, Callable


def run_async(make: Callable[[], Awaitable[Any]]) -> Any:
    """``asyncio.run(make())`` in a fresh thread; returns its result or raises its exception."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = asyncio.run(make())
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread
            out["error"] = exc

    thread = threading.Thread(target=target, name="test-asyncio")
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")
