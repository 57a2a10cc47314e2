"""The uploaded model's side of :mod:`vizlib.isolation`: load, describe, serve requests until EOF.

Runs in the child process that :class:`vizlib.isolation.IsolatedModel` starts
(``BOOTSTRAP`` sets its OS limits first). Everything that goes wrong goes back
to the parent as a message; nothing here trusts the model file.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from vizlib import wire
from vizlib.errors import InputError

GiB = 2**30
MiB = 2**20


#: The child's first lines (run with ``python -I -c``): OS limits, then :func:`child_main`.
BOOTSTRAP = r"""
import json, os, resource, sys
cfg = json.loads(sys.argv[1])
def limit(which, soft, hard=None):
    hard = soft if hard is None else hard
    try:
        resource.setrlimit(which, (soft, hard))
    except (ValueError, OSError) as exc:
        sys.stderr.write("vizlib.isolation: could not set limit %r: %s\n" % (which, exc))
limit(resource.RLIMIT_DATA, cfg["data"])
limit(resource.RLIMIT_AS, cfg["as"])
limit(resource.RLIMIT_CPU, cfg["cpu"], cfg["cpu"] + 5)
limit(resource.RLIMIT_CORE, 0)
try:
    os.nice(5)
except OSError:
    pass
sys.path.insert(0, cfg["root"])
from vizlib.isolation_child import child_main
child_main(cfg)
"""


def _child_send(sock: socket.socket, header: dict, arrays: Sequence[np.ndarray] = ()) -> None:
    wire.send(sock.sendall, header, arrays)


def _child_read_into(sock: socket.socket, view: memoryview) -> None:
    got, n = 0, len(view)
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise EOFError
        got += k


def _child_recv(sock: socket.socket) -> Optional[tuple[dict, list[np.ndarray]]]:
    """The parent's next request, or None when it went away (the parent is trusted: generous limits)."""
    try:
        return wire.receive(lambda view: _child_read_into(sock, view), max_header=64 * MiB, max_bytes=8 * GiB)
    except EOFError:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return (f"{type(exc).__name__}: {line}" if line else type(exc).__name__)[:300]


def _error_reply(exc: BaseException) -> dict:
    if isinstance(exc, InputError):
        return {"ok": False, "kind": "input", "message": str(exc)[:2000]}
    if isinstance(exc, MemoryError) or type(exc).__name__ == "ResourceExhaustedError":
        return {"ok": False, "kind": "memory", "message": _first_line(exc)}
    return {"ok": False, "kind": "error", "message": _first_line(exc)}


def _child_load(cfg: dict) -> Any:
    path = Path(cfg["path"])
    from vizlib.modelcheck import check_model_file

    check_model_file(path)
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(cfg["threads"]))
        tf.config.threading.set_inter_op_parallelism_threads(min(2, int(cfg["threads"])))
    except RuntimeError:  # pragma: no cover - already initialised
        pass
    from vizlib.models import load_model_file

    loaded = load_model_file(path, preprocess=cfg["preprocess"], check=False, title=cfg["title"])
    if cfg.get("init_seed") is not None:
        loaded = loaded.untrained_copy(int(cfg["init_seed"]))
    return loaded


def _describe(loaded: Any) -> dict:
    from vizlib.layers import all_layers

    return {
        "ok": True,
        "input_size": [int(loaded.input_size[0]), int(loaded.input_size[1])],
        "channels": int(loaded.channels),
        "class_names": [str(c) for c in loaded.class_names] if loaded.class_names else None,
        "preprocess_name": str(loaded.preprocess_name),
        "is_classifier": bool(loaded.is_classifier),
        "layers": [[int(i.index), str(i.name), str(i.kind),
                    [None if d is None else int(d) for d in i.output_shape]] for i in all_layers(loaded)],
    }


def _child_request(loaded: Any, header: dict, arrays: list[np.ndarray]) -> tuple[dict, list[np.ndarray]]:
    from vizlib import ops

    kind = header.get("op")
    if kind == "run":
        params = header.get("params")
        if not isinstance(params, dict) or len(arrays) > 1:
            raise InputError("Malformed request.")
        result = loaded.run(str(header.get("name")), arrays[0] if arrays else None,
                            prepared=bool(header.get("prepared")), **params)
        plain, names, out = ops.split(result)
        return {"ok": True, "result": plain, "names": names}, out
    if kind == "ping":
        return {"ok": True}, []
    raise InputError(f"Unknown request {kind!r}.")


def child_main(cfg: dict) -> None:
    """The child's whole life: load the model, describe it, serve requests until EOF."""
    import faulthandler

    faulthandler.enable()
    sock = socket.socket(fileno=int(cfg["fd"]))
    try:
        try:
            loaded = _child_load(cfg)
            reply, arrays = _describe(loaded), []
        except BaseException as exc:  # noqa: BLE001 - everything goes back as a message
            _child_send(sock, _error_reply(exc))
            return
        _child_send(sock, reply, arrays)
        while True:
            message = _child_recv(sock)
            if message is None:  # the parent went away without killing us: tidy up its folder
                folder = Path(cfg["path"]).parent
                if folder.name.startswith("vizlib-model-"):
                    shutil.rmtree(folder, ignore_errors=True)
                return
            header, arrays = message
            if header.get("op") == "close":
                return
            started = time.perf_counter()
            try:
                reply, out = _child_request(loaded, header, arrays)
            except BaseException as exc:  # noqa: BLE001
                reply, out = _error_reply(exc), []
            reply["seconds"] = time.perf_counter() - started
            del arrays, message
            _child_send(sock, reply, out)
            del out
    except (BrokenPipeError, ConnectionResetError):
        return
    finally:
        try:
            sock.close()
        except OSError:
            pass
