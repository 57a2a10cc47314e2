"""Uploaded Keras models run in a child process with memory, CPU and time limits.

A Keras model file is code, and even a file that passes
:func:`vizlib.modelcheck.check_model_file` and ``safe_mode=True`` can ask for
more memory or time than a shared server has.  :class:`IsolatedModel` loads the
file in a *fresh* Python process (``subprocess``, i.e. fork+exec: never a
``fork`` of the parent, which runs TensorFlow and Streamlit threads), talks to
it over a private socket, and kills it when it misbehaves; the parent process
never imports or deserialises anything from the model::

    with IsolatedModel("upload.keras", preprocess="unit") as m:
        m.layers                                   # [LayerInfo, ...] plain data
        acts, probs = m.forward(batch, ["conv1"])  # batch: raw float32 0..255, (N, H, W, C)
        maps = m.channel(batch, "conv1", 3)        # (N, H, W)

Where the work happens
----------------------
The parent sends the *raw* batch (float32 pixels 0..255, already resized to
the model's ``input_size`` and ``channels``, i.e. :func:`vizlib.images.to_batch`
without ``preprocess``) and the child applies ``LoadedModel.preprocess`` (one
definition of each scaling, in :mod:`vizlib.models`).  The child then runs the
very same :func:`vizlib.extract.forward` / ``channel_across_images`` as the
in-process path, so results are identical and the activation budget
(``MAX_ACTIVATION_BYTES``) is checked there.

The wire format
---------------
:mod:`vizlib.wire` on a ``socketpair``: a JSON header, then raw bytes per
numpy array. No pickle in either direction, so a compromised child can send
the parent nothing but JSON and numeric arrays, checked before allocating.  Layer descriptions cross as ``[index, name, kind, shape]`` lists and
are rebuilt as :class:`vizlib.layers.LayerInfo` in the parent.

Limits (set in the child before numpy, Keras or TensorFlow are imported)
-----------------------------------------------------------------------
* **Memory: ``RLIMIT_DATA = memory_limit_bytes``**, plus two backstops.
  ``VmData`` (private writable mappings: heap, anonymous ``mmap``, thread
  stacks) follows what a model allocates, and the kernel enforces
  ``RLIMIT_DATA`` at allocation time, so unlike a polling watchdog a burst
  cannot overshoot it; ``RLIMIT_AS`` and ``VmRSS`` are bad proxies (shared
  libraries, reserved address space). An allocation over the limit raises
  ``MemoryError``/``ResourceExhaustedError`` (an out-of-memory
  :class:`InputError`; the child lives on) or crashes the child (reported as
  "process stopped"). The child caps TensorFlow at ``threads`` intra-op and 2
  inter-op threads; its baseline is ~0.4 GB plus the weights. The
  measurements behind these choices are in ``benchmarks/README.md``
  ("Uploaded models: the memory limit").
  Backstops: ``RLIMIT_AS = memory_limit_bytes + 4 GiB`` (address space is the
  only rlimit that also counts *shared* anonymous memory), and while a request
  is in flight the parent polls the child's ``RssAnon + RssShmem`` every 50 ms
  and kills it above ``memory_limit_bytes``.
* **CPU: ``RLIMIT_CPU = cpu_seconds``** (soft; the kernel sends ``SIGXCPU``,
  hard limit +5 s then ``SIGKILL``).  It is the child's *lifetime* budget
  (start-up uses ~4 CPU-seconds), a backstop behind the per-request wall-clock
  ``timeout`` the parent enforces; when it is used up the child dies and, with
  ``restart=True``, the next request starts a fresh one.
* ``os.nice(5)``, ``RLIMIT_CORE = 0`` (no core files), its own session and
  process group (no terminal signals; killing it kills the whole group),
  ``stdin``/``stdout`` closed, ``stderr`` drained by a thread (logged at DEBUG,
  the last lines at WARNING when the child stops), ``cwd`` a private temporary
  folder holding the parent's copy of the model file, and an environment
  reduced to ``PATH``, ``HOME``, locale and ``TF_``/``KERAS_``/``OMP_``/...
  variables (model code never sees the server's secrets).
* The child exits by itself when the parent goes away (end of file on the
  socket), deleting the private copy of the file, so a crashed server leaves
  no model processes or files behind.

When the child stops
--------------------
If the child dies (a limit, a crash), exceeds ``timeout`` or breaks the
protocol, the parent kills it (``SIGKILL`` + ``wait``) and raises
``InputError("The uploaded model's process stopped ...")``.  With
``restart=True`` (the default) the *next* request transparently starts a new
child from the private copy of the file (costing the start-up time again);
with ``restart=False`` every later request raises the same ``InputError``.
An :class:`InputError` raised in the child (a bad layer name, the activation
budget) comes back as :class:`InputError` with the same message; any other
exception comes back as an :class:`InputError` with its first line only.

Each :class:`IsolatedModel` serialises its requests with one lock (Streamlit
sessions share cached models across threads).
"""

from __future__ import annotations

import collections
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

import vizlib.extract  # noqa: F401
from vizlib import wire
from vizlib.errors import InputError
from vizlib.settings import environment_subset
from vizlib.layers import LayerInfo
from vizlib.isolation_child import BOOTSTRAP

__all__ = ["IsolatedModel", "STOPPED_MESSAGE", "MEMORY_MESSAGE"]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
GiB = 2**30
MiB = 2**20

#: ``RLIMIT_AS`` is ``memory_limit_bytes`` plus this much (shared libraries and
#: reserved-but-unused address space: ~1.3 GB measured with 6 TF threads).
ADDRESS_SPACE_HEADROOM = 4 * GiB
#: How often (seconds) the parent checks the child while a request is in flight.
POLL_SECONDS = 0.05
#: Largest JSON header accepted from the child.
MAX_HEADER_BYTES = 16 * MiB

STOPPED_MESSAGE = (
    "The uploaded model's process stopped ({why}): it ran out of memory or time limits. "
    "Try a smaller model, fewer images, or fewer or earlier layers."
)
MEMORY_MESSAGE = (
    "The uploaded model ran out of memory ({why}). Try a smaller model, fewer images, "
    "or fewer or earlier layers."
)


class _Stopped(Exception):
    """The child is gone or unusable; ``why`` is a short reason for the message.

    ``died`` marks a broken connection, whose real reason is how the child exited.
    """

    def __init__(self, why: str, died: bool = False):
        super().__init__(why)
        self.why = why
        self.died = died


def max_response_bytes() -> int:
    """Largest array payload accepted from the child in one reply: the requested
    activations and the model's output, each within the activation budget."""
    return 2 * int(vizlib.extract.MAX_ACTIVATION_BYTES) + 16 * MiB


# --------------------------------------------------------------------------- the parent


def _status(pid: int) -> dict[str, int]:
    """Memory figures (bytes) and thread count of a process from ``/proc/<pid>/status``."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                parts = value.split()
                if key.startswith(("Vm", "Rss")) and parts and parts[0].isdigit():
                    out[key] = int(parts[0]) * 1024
                elif key == "Threads" and parts:
                    out[key] = int(parts[0])
    except OSError:
        pass
    return out


#: Environment variables the child inherits (model code must not see the server's secrets).
_ENV_NAMES = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
                        "LD_LIBRARY_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR"})
_ENV_PREFIXES = ("LC_", "TF_", "KERAS_", "OMP_", "KMP_", "MKL_", "ONEDNN_", "DNNL_", "MALLOC_", "XLA_", "CUDA_")


def _child_env() -> dict[str, str]:
    return environment_subset(_ENV_NAMES, _ENV_PREFIXES)


def _signal_name(returncode: Optional[int]) -> str:
    if returncode is None:
        return "it stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = {"SIGXCPU": "CPU-time limit", "SIGSEGV": "crashed, usually out of memory",
                "SIGKILL": "killed", "SIGABRT": "aborted, usually out of memory"}.get(name)
        return f"{name}, {hint}" if hint else name
    return f"exit status {returncode}"


class _Child:
    """One running child process and its end of the socket."""

    def __init__(self, proc: subprocess.Popen, sock: socket.socket):
        self.proc = proc
        self.sock = sock
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self.reader = threading.Thread(target=self._drain, name=f"isolated-model-stderr-{proc.pid}", daemon=True)
        self.reader.start()

    def _drain(self) -> None:
        stream = self.proc.stderr
        if stream is None:
            return
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip()
                self.stderr_tail.append(line[:500])
                log.debug("model process %s: %s", self.proc.pid, line)
        except (OSError, ValueError):
            pass

    def kill(self) -> None:
        """SIGKILL the child's whole process group (it leads its own session), then reap it."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                try:
                    self.proc.kill()
                except OSError:
                    pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not fail
            log.error("model process %s did not die after SIGKILL", self.proc.pid)
        try:
            self.sock.close()
        except OSError:
            pass
        if self.proc.stderr is not None:
            self.reader.join(timeout=2)
            try:
                self.proc.stderr.close()
            except OSError:
                pass


class _State:
    """What the finaliser needs (never the IsolatedModel itself)."""

    def __init__(self, folder: str):
        self.folder = folder
        self.child: Optional[_Child] = None


def _shutdown(state: _State) -> None:
    child, state.child = state.child, None
    if child is not None:
        child.kill()
    shutil.rmtree(state.folder, ignore_errors=True)


class IsolatedModel:
    """An uploaded model that lives in its own child process (spawned, never forked).

    Construction copies the file into a private folder, starts the child, lets
    it check (:func:`vizlib.modelcheck.check_model_file`) and load the model
    (``safe_mode=True``, ``compile=False``) and waits for its description; after
    that every attribute below is plain data in the parent.  Raises
    :class:`InputError` when the file is refused, fails to load, or the child
    stops while loading.

    ``memory_limit_bytes`` bounds the child's private memory (``RLIMIT_DATA``;
    ~0.4 GB of it is TensorFlow itself), ``cpu_seconds`` its lifetime CPU time,
    ``timeout`` each request's wall-clock time and ``start_timeout`` the
    start-up (TensorFlow import and model load). ``threads`` caps TensorFlow's
    intra-op threads in the child. With ``restart=True`` a request after the
    child stopped starts a new one; otherwise it raises :class:`InputError`.
    """

    #: This class satisfies :class:`vizlib.contract.VizModel`; nothing above it asks which kind it holds.

    def __init__(self, path: str | Path, *, preprocess: str = "auto", title: Optional[str] = None,
                 memory_limit_bytes: int = 3 * GiB, cpu_seconds: int = 300, timeout: float = 120.0,
                 start_timeout: float = 180.0, threads: Optional[int] = None, restart: bool = True,
                 init_seed: Optional[int] = None):
        from vizlib.models import AUTO, PREPROCESSING

        path = Path(path)
        if not path.is_file():
            raise InputError(f"No model file at {path}.")
        suffix = path.suffix.lower()
        if suffix not in (".keras", ".h5", ".hdf5"):
            raise InputError(f"'{path.name}' is not a Keras model file: use a .keras or .h5 file.")
        if preprocess not in PREPROCESSING and preprocess != AUTO:
            raise InputError(f"Unknown preprocessing '{preprocess}'. Choose one of: {', '.join([AUTO, *PREPROCESSING])}.")
        self.title = title or path.name
        self.source = path.name
        self.memory_limit_bytes = int(memory_limit_bytes)
        self.cpu_seconds = int(cpu_seconds)
        self.timeout = float(timeout)
        self.start_timeout = float(start_timeout)
        self.threads = max(1, int(threads or min(4, os.cpu_count() or 1)))
        self.restart = restart
        self.starts = 0
        #: (seconds the child spent computing, seconds the whole request took) of the last request.
        self.last_timing: tuple[float, float] = (float("nan"), float("nan"))
        self._lock = threading.Lock()
        self._closed = False
        self._stopped: Optional[str] = None
        self._preprocess = preprocess
        self._init_seed = None if init_seed is None else int(init_seed)
        self.weights = "file" if init_seed is None else "untrained"
        self._state = _State(tempfile.mkdtemp(prefix="vizlib-model-"))
        self._finalizer = weakref.finalize(self, _shutdown, self._state)
        try:
            # The private copy keeps the user's file name when it is plain, so that
            # modelcheck's and Keras' messages name the file the user knows.
            shown = Path(self.title).name
            plain = re.fullmatch(r"[\w][\w .()+-]{0,118}", shown) and shown.lower().endswith(suffix)
            self._path = Path(self._state.folder) / (shown if plain else f"model{suffix}")
            digest = hashlib.sha256()
            with open(path, "rb") as src, open(self._path, "wb") as dst:
                for chunk in iter(lambda: src.read(MiB), b""):
                    digest.update(chunk)
                    dst.write(chunk)
            self.key = f"file:{digest.hexdigest()}:{preprocess}" + (
                "" if init_seed is None else f":untrained:{int(init_seed)}")
            with self._lock:
                desc = self._start()
            self._apply(desc)
            if preprocess == AUTO:  # keyed by the scaling applied, as load_model_file keys it
                self.key = self.key.replace(f":{AUTO}", f":{self.preprocess_name}", 1)
        except BaseException:
            self._finalizer()
            raise

    # ------------------------------------------------------------------ description

    def _apply(self, desc: dict) -> None:
        try:
            h, w = (int(v) for v in desc["input_size"])
            self.input_size: tuple[int, int] = (h, w)
            self.channels: int = int(desc["channels"])
            names = desc["class_names"]
            self.class_names: Optional[list[str]] = [str(n) for n in names] if names is not None else None
            self.preprocess_name: str = str(desc["preprocess_name"])
            self.is_classifier: bool = bool(desc["is_classifier"])
            layers = []
            for index, name, kind, shape in desc["layers"]:
                if not all(d is None or type(d) is int for d in shape):
                    raise TypeError("shape")
                layers.append(LayerInfo(index=int(index), name=str(name), kind=str(kind),
                                        output_shape=tuple(shape)))
            self.layers: list[LayerInfo] = layers
        except (KeyError, TypeError, ValueError) as exc:
            self._kill()
            raise InputError("The uploaded model's process sent a description the dashboard can't read.") from exc

    @property
    def untrained(self) -> bool:
        return self._init_seed is not None

    @property
    def label(self) -> str:
        return f"{self.title} · untrained, random weights" if self.untrained else self.title

    @property
    def pid(self) -> Optional[int]:
        """The child's process id (None when no child is running)."""
        child = self._state.child
        return child.proc.pid if child is not None and child.proc.poll() is None else None

    def child_status(self) -> dict[str, int]:
        """The child's ``/proc`` memory figures in bytes (``VmData``, ``RssAnon``, ``VmPeak`` ...)."""
        pid = self.pid
        return _status(pid) if pid else {}

    # ------------------------------------------------------------------ process

    def _start(self) -> dict:
        """Start a child and return its description (lock held)."""
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cfg = {
            "fd": child_sock.fileno(), "root": str(ROOT), "path": str(self._path),
            "preprocess": self._preprocess, "title": self.title, "threads": self.threads,
            "data": self.memory_limit_bytes,
            "as": self.memory_limit_bytes + ADDRESS_SPACE_HEADROOM,
            "cpu": self.cpu_seconds, "init_seed": self._init_seed,
        }
        env = _child_env()
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env.setdefault("MALLOC_ARENA_MAX", "4")
        env["OMP_NUM_THREADS"] = str(self.threads)
        env["PYTHONUNBUFFERED"] = "1"
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"  # input gradients with oneDNN on can corrupt the heap (see vizlib/__init__)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-c", BOOTSTRAP, json.dumps(cfg)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                pass_fds=(child_sock.fileno(),), cwd=self._state.folder, env=env,
                start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            parent_sock.close()
            raise InputError(f"Could not start a process for the uploaded model ({exc}).") from exc
        finally:
            child_sock.close()
        parent_sock.settimeout(POLL_SECONDS)
        self._state.child = _Child(proc, parent_sock)
        self.starts += 1
        self._stopped = None
        started = time.monotonic()
        header, _ = self._receive(time.monotonic() + self.start_timeout, during="while loading")
        log.info("model process %s for %s ready in %.1f s", proc.pid, self.title, time.monotonic() - started)
        return header

    def _kill(self) -> None:
        child, self._state.child = self._state.child, None
        if child is not None:
            child.kill()

    def _stop(self, stop: _Stopped, during: str = "") -> InputError:
        """Kill the child after it misbehaved; the InputError to raise."""
        why = stop.why
        child = self._state.child
        if child is not None:
            if stop.died:  # the connection broke: say how the child ended
                try:
                    code = child.proc.wait(timeout=1)
                    why = _signal_name(code) + (f", {during}" if during else "")
                except subprocess.TimeoutExpired:
                    pass
            child.kill()
            if child.stderr_tail:
                log.warning("model process %s for %s stopped (%s); its last output:\n%s", child.proc.pid,
                            self.title, why, "\n".join(child.stderr_tail))
            else:
                log.warning("model process %s for %s stopped (%s)", child.proc.pid, self.title, why)
        self._state.child = None
        self._stopped = why
        if self._closed:
            return InputError("This uploaded model was closed; upload it again.")
        return InputError(STOPPED_MESSAGE.format(why=why))

    def _check(self, deadline: float, during: str) -> None:
        """Between polls: still alive, within time and memory?"""
        child = self._state.child
        if child is None:  # closed from another thread
            raise _Stopped("it was closed")
        code = child.proc.poll()
        if code is not None:
            raise _Stopped(_signal_name(code) + (f", {during}" if during else ""))
        if time.monotonic() > deadline:
            limit = self.start_timeout if during == "while loading" else self.timeout
            raise _Stopped(f"it took longer than {limit:g} s" + (f" {during}" if during else ""))
        status = _status(child.proc.pid)
        used = status.get("RssAnon", 0) + status.get("RssShmem", 0)
        if used > self.memory_limit_bytes:
            raise _Stopped(f"it used more than {self.memory_limit_bytes / GiB:.1f} GB of memory")

    def _read_into(self, view: memoryview, deadline: float, during: str) -> None:
        child = self._state.child
        if child is None:  # closed from another thread
            raise _Stopped("it was closed")
        got, n = 0, len(view)
        while got < n:
            try:
                k = child.sock.recv_into(view[got:], n - got)
            except (TimeoutError, socket.timeout):
                self._check(deadline, during)
                continue
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    self._check(deadline, during)
                    continue
                raise _Stopped("its connection broke", died=True) from exc
            if k == 0:
                raise _Stopped("it closed its connection" + (f", {during}" if during else ""), died=True)
            got += k

    def _send_all(self, data: memoryview, deadline: float) -> None:
        child = self._state.child
        if child is None:  # closed from another thread
            raise _Stopped("it was closed")
        sent = 0
        while sent < len(data):
            try:
                sent += child.sock.send(data[sent:])
            except (TimeoutError, socket.timeout):
                self._check(deadline, "")
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    self._check(deadline, "")
                    continue
                raise _Stopped("its connection broke", died=True) from exc

    def _receive(self, deadline: float, during: str = "") -> tuple[dict, list[np.ndarray]]:
        """One reply from the child (lock held); raises InputError for errors and stops."""
        try:
            try:
                header, arrays = wire.receive(lambda view: self._read_into(view, deadline, during),
                                              max_header=MAX_HEADER_BYTES, max_bytes=max_response_bytes())
            except wire.Malformed as exc:
                raise _Stopped(str(exc)) from None
        except _Stopped as stop:
            raise self._stop(stop, during) from None
        if header.get("ok") is True:
            return header, arrays
        kind, message = header.get("kind"), str(header.get("message", ""))[:2000]
        if during == "while loading":
            self._kill()
        if kind == "input":
            raise InputError(message)
        if kind == "memory":
            raise InputError(MEMORY_MESSAGE.format(why=message))
        if during == "while loading":
            raise InputError(f"Keras could not load '{self.title}': {message}")
        raise InputError(f"The uploaded model failed: {message}")

    def _request(self, header: dict, arrays: Sequence[np.ndarray]) -> tuple[dict, list[np.ndarray]]:
        with self._lock:
            if self._closed:
                raise InputError("This uploaded model was closed; upload it again.")
            if self._state.child is None:
                if not self.restart:
                    raise InputError(STOPPED_MESSAGE.format(why=self._stopped or "it was stopped"))
                desc = self._start()
                if [list(x) for x in desc["layers"]] != [
                        [i.index, i.name, i.kind, list(i.output_shape)] for i in self.layers]:
                    self._kill()
                    raise InputError("The uploaded model's process came back as a different model.")
            started = time.perf_counter()
            deadline = time.monotonic() + self.timeout
            try:
                wire.send(lambda view: self._send_all(view, deadline), header, arrays)
            except _Stopped as stop:
                raise self._stop(stop) from None
            reply = self._receive(deadline)
            seconds = reply[0].get("seconds")
            self.last_timing = (float(seconds) if isinstance(seconds, (int, float)) else float("nan"),
                                time.perf_counter() - started)
            return reply

    # ------------------------------------------------------------------ the model contract

    def raw_batch(self, images: Any) -> np.ndarray:
        """Raw float32 (N, H, W, C) pixels 0..255 at the model's size, from PIL images or an array."""
        from vizlib.models import raw_batch

        return raw_batch(images, self.input_size, self.channels)

    def run(self, op: str, batch: Optional[np.ndarray] = None, *, prepared: bool = False, **params: Any) -> dict:
        """Run the operation ``op`` (:mod:`vizlib.ops`) in the child; ``batch`` is raw pixels unless ``prepared``."""
        from vizlib import ops

        header = {"op": "run", "name": str(op), "params": params, "prepared": bool(prepared)}
        arrays = [] if batch is None else [np.ascontiguousarray(batch if prepared else self.raw_batch(batch),
                                                                 dtype=np.float32)]
        reply, out = self._request(header, arrays)
        plain, names = reply.get("result"), reply.get("names")
        if (not isinstance(plain, dict) or not isinstance(names, list) or len(names) != len(out)
                or not all(isinstance(n, str) for n in names)):
            raise InputError("The uploaded model's process sent a reply the dashboard can't read.")
        return ops.join(plain, names, out)

    def weights_digest(self) -> str:
        """The uploaded file's SHA-256 (plus the seed, for a randomly initialised copy)."""
        digest = self.key.split(":")[1]
        return digest if self._init_seed is None else f"{digest}:untrained:{self._init_seed}"

    def untrained_copy(self, seed: int = 0) -> "IsolatedModel":
        """The same architecture randomly initialised, in a process of its own."""
        if self._init_seed == int(seed):
            return self
        return IsolatedModel(self._path, preprocess=self._preprocess, title=self.title,
                             memory_limit_bytes=self.memory_limit_bytes, cpu_seconds=self.cpu_seconds,
                             timeout=self.timeout, start_timeout=self.start_timeout, threads=self.threads,
                             restart=self.restart, init_seed=int(seed))

    def ping(self) -> None:
        """Round-trip to the child (starts a new one if it stopped and ``restart`` is on)."""
        self._request({"op": "ping"}, [])

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Kill the child and delete the private copy of the file (idempotent)."""
        self._closed = True
        child = self._state.child
        if child is not None and child.proc.poll() is None:
            try:
                child.proc.kill()  # wakes a request in flight in another thread
            except OSError:
                pass
        with self._lock:
            self._finalizer()

    def __enter__(self) -> "IsolatedModel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"IsolatedModel({self.title!r}, key={self.key[:20]!r}..., pid={self.pid})"


def sniff_model_suffix(data: bytes, claimed_name: str = "") -> str:
    """``.keras`` (a ZIP) or ``.h5`` (HDF5) from the file's first bytes; the claimed name decides otherwise."""
    if data[:4] == b"PK\x03\x04":
        return ".keras"
    if data[:8] == b"\x89HDF\r\n\x1a\n":
        return ".h5"
    # Neither: keep the user's claim, so the pre-check says what is wrong with *that* kind of file.
    return ".h5" if claimed_name.lower().endswith((".h5", ".hdf5")) else ".keras"


def open_uploaded_model(data: bytes, filename: str, *, preprocess: str = "auto",
                        memory_limit_bytes: int = 3 * GiB, **kwargs: Any) -> IsolatedModel:
    """An uploaded model file (its bytes), checked and started in its own process with limits.

    The bytes are saved under a server-chosen name in a private folder (the
    uploaded name is only a label, never a path); the child keeps its own copy
    and this one is deleted at once. Messages name the file as the user knows it.
    """
    label = Path(filename or "").name[:80] or "model"
    folder = Path(tempfile.mkdtemp(prefix="cnn-viz-model-"))
    path = folder / f"{hashlib.sha256(data).hexdigest()[:16]}{sniff_model_suffix(data, label)}"
    path.write_bytes(data)
    try:
        return IsolatedModel(path, preprocess=preprocess, title=label, memory_limit_bytes=memory_limit_bytes,
                             **kwargs)
    except InputError as exc:
        raise InputError(str(exc).replace(path.name, label)) from exc
    finally:
        shutil.rmtree(folder, ignore_errors=True)
