"""Many Streamlit sessions against one ``streamlit run app.py``, at the websocket protocol level.

Shared by ``benchmarks/bench_load.py`` (timings, memory) and ``tests/browser/test_load.py``
(zero errors, every run finished, sessions isolated). No browser: each session is one
websocket speaking Streamlit's own protocol, as the frontend does (checked against
streamlit 1.64: ``streamlit/web/server/starlette/starlette_websocket.py`` and the bundled
frontend ``static/js/index.*.js``), so 20-30 of them cost the 2-core box little and the
measurement is of the SERVER:

* connect to ``ws://host:port/_stcore/stream`` with subprotocol ``streamlit`` (the frontend
  sends ``["streamlit", <xsrf token>, <session id to resume>]``; the last two are optional);
* a run is one ``BackMsg.rerun_script`` (a ``ClientState``: query string, widget states, page
  script hash, the hashes of the cached messages it holds, context info) answered by
  ``ForwardMsg``s: ``new_session``, ``session_status_changed``, ``delta``s,
  ``page_info_changed`` (the app mirrors its state in the URL), ... ``script_finished``;
* big elements (``metadata.cacheable``) are kept by hash, and their hashes are sent with each
  rerun, as the frontend does; the server then answers an unchanged element with a
  ``ref_hash`` message, which is resolved here (a miss is an error, as in the frontend);
* the query string of the last ``page_info_changed`` is sent with the next rerun (the browser
  puts it in its address bar, and the frontend sends ``document.location.search``);
* images (``st.image``) are fetched from ``/media/...`` after each run, as a browser does;
  on the first run the page itself (index.html and the scripts it names) is fetched too;
* cookies are kept and sent back, as a browser does: behind the load balancer of
  ``deploy/`` a cookie names the app process a session sticks to. Every response's
  ``X-Served-By`` header (set by ``deploy/haproxy.cfg``) is recorded per session, the
  websocket handshake's included (:attr:`Session.served_by`).

Also here: :class:`Deployment`, ``deploy/run.sh N`` (N app processes behind HAProxy) started
and stopped as :class:`ServerProcess` starts one ``streamlit run``, with HAProxy's own view of
its processes (its admin socket).

Widget states: the frontend sends a value for every widget on the page; this client sends
only the widgets it has changed (by widget key, with the widget id read from the last run's
deltas, e.g. ``$$ID-<hash>-cmap``). Streamlit keeps the previous value of any widget missing
from a rerun's states, so the script sees the same values.

Errors counted per run: an exception element, an error alert (``st.error``), a
``script_finished`` other than FINISHED_SUCCESSFULLY, a compile-error session event, a
``ref_hash`` miss, a media fetch that fails, a timeout or a closed websocket; and, in the
scenario (:func:`session_flow`), a page that does not show the session's own state (image
caption, colormap and channel of the detail heatmap).
"""

from __future__ import annotations

import asyncio
import csv
import http.cookies
import inspect
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.Alert_pb2 import Alert
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState

ROOT = Path(__file__).resolve().parent.parent
STEP_TIMEOUT_S = 180.0
SERVER_START_TIMEOUT_S = 120.0
FINISHED_OK = ForwardMsg.ScriptFinishedStatus.Value("FINISHED_SUCCESSFULLY")
DEPLOY_RUN = ROOT / "deploy" / "run.sh"
#: deploy/haproxy.cfg: the cookie that names a session's app process, and the response header
#: that says which process answered.
STICKY_COOKIE = "CNNVIZ_PROC"
SERVED_BY = "X-Served-By"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_WS_KW: dict[str, Any] = {"subprotocols": ["streamlit"], "max_size": None, "open_timeout": 60,
                          "close_timeout": 5}
if "proxy" in inspect.signature(websockets.connect).parameters:  # websockets >= 15 reads proxy env vars
    _WS_KW["proxy"] = None
_ID = re.compile(r"^\$\$ID-[0-9a-f]+-(?P<key>.+)$")
_ASSET = re.compile(r"""(?:src|href)="\./(static/[^"]+|favicon\.png)\"""")


def run_async(coro_fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``asyncio.run(coro_fn(*args, **kwargs))`` in a thread of its own, so it also works where an
    event loop is already running in this thread (Playwright's sync API keeps one, e.g. in the
    browser test suite)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro_fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, name="load-client", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def user_key(widget_id: str) -> Optional[str]:
    """The ``key=`` of a keyed element from its id (``$$ID-<hash>-<key>``), or None."""
    m = _ID.match(widget_id or "")
    return m.group("key") if m else None


def percentile(xs: list[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100) of a non-empty list."""
    xs = sorted(xs)
    if not xs:
        return float("nan")
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


# --------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``streamlit run app.py`` as in tests/browser/conftest.py: a free port, an empty Keras cache
    (so the bundled offline model is the default), CNN_VIZ_OFFLINE=1, its own process group,
    which :meth:`stop` kills (by its id) whatever happened."""

    def __init__(self, log_path: Path, extra_env: Optional[dict] = None,
                 launcher: Optional[list[str]] = None):
        """``launcher``: what runs ``streamlit`` (default ``[sys.executable, "-m", "streamlit"]``),
        e.g. a wrapper script for a what-if experiment."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        self.keras_home = tempfile.mkdtemp(prefix="keras_home_")
        env = dict(os.environ, KERAS_HOME=self.keras_home, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
                   CNN_VIZ_OFFLINE="1", **(extra_env or {}))
        cmd = [*(launcher or [sys.executable, "-m", "streamlit"]), "run", "app.py",
               "--server.port", str(self.port), "--server.address", "127.0.0.1",
               "--server.headless", "true", "--browser.gatherUsageStats", "false"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_healthy(self, timeout: float = SERVER_START_TIMEOUT_S) -> float:
        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with _NO_PROXY.open(f"{self.url}/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        return time.monotonic() - t0
            except OSError:
                pass
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"streamlit not healthy after {timeout} s:\n{self.log_tail()}")
            time.sleep(0.25)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL if it lingers."""
        try:
            if self.proc.returncode is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGTERM)
                    self.proc.wait(timeout=15)
                except ProcessLookupError:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    self.proc.wait(timeout=15)
        finally:
            if not self._log.closed:
                self._log.close()
            shutil.rmtree(self.keras_home, ignore_errors=True)  # Keras writes keras.json into it

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def find_haproxy() -> Optional[str]:
    """The haproxy binary: on PATH, or where Debian puts it (/usr/sbin, not on a user's PATH)."""
    found = shutil.which("haproxy")
    if found:
        return found
    for candidate in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all held open while choosing, so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Deployment:
    """``deploy/run.sh N``: N ``streamlit run app.py`` processes behind HAProxy, on free loopback
    ports, with the same environment as :class:`ServerProcess` (empty Keras cache, offline).

    run.sh leads its own process group, which :meth:`stop` signals (by its id): run.sh's
    trap stops the app processes and HAProxy. Its run directory holds ``app<i>.pid`` (the
    current ``streamlit`` process of slot i; run.sh starts it again when it exits), the logs
    and HAProxy's admin socket, through which :meth:`states` reads HAProxy's own view."""

    def __init__(self, n: int, run_dir: Path, extra_env: Optional[dict] = None, restart_delay: float = 2.0):
        self.n = n
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.port, *self.app_ports = free_ports(n + 1)
        self.url = f"http://127.0.0.1:{self.port}"
        self.names = [f"app{i}" for i in range(1, n + 1)]
        self.keras_home = tempfile.mkdtemp(prefix="keras_home_")
        env = dict(os.environ, KERAS_HOME=self.keras_home, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
                   CNN_VIZ_OFFLINE="1", RUN_DIR=str(self.run_dir), PORT=str(self.port), BIND="127.0.0.1",
                   APP_PORTS=" ".join(map(str, self.app_ports)), PYTHON=sys.executable,
                   RESTART_DELAY=str(restart_delay), **(extra_env or {}))
        haproxy = find_haproxy()
        if haproxy:
            env.setdefault("HAPROXY", haproxy)
        self.log_path = self.run_dir / "run.sh.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["bash", str(DEPLOY_RUN), str(n)], cwd=ROOT, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def app_url(self, name: str) -> str:
        """One app process directly, bypassing the balancer."""
        return f"http://127.0.0.1:{self.app_ports[self.names.index(name)]}"

    def app_pid(self, name: str) -> int:
        """The current ``streamlit`` process of slot ``name`` (run.sh rewrites it on a restart)."""
        return int((self.run_dir / f"{name}.pid").read_text().strip())

    def app_log(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    def haproxy_pid(self) -> int:
        return int((self.run_dir / "haproxy.pid").read_text().strip())

    def haproxy(self, command: str, timeout: float = 5.0) -> str:
        """One command on HAProxy's admin socket (``show stat``, ``show servers state``, ...)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.run_dir / "haproxy.sock"))
            s.sendall(command.encode() + b"\n")
            chunks = []
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        return b"".join(chunks).decode("utf-8", "replace")

    def states(self) -> dict[str, str]:
        """HAProxy's view of each app process: ``{"app1": "UP", "app2": "DOWN", ...}`` (in
        transition: "UP 1/2" = failing checks, "DOWN 1/2" = passing ones)."""
        text = self.haproxy("show stat").lstrip("# ")
        return {row["svname"]: row["status"] for row in csv.DictReader(text.splitlines())
                if row.get("pxname") == "app" and row.get("svname") in self.names}

    def wait_states(self, want: dict[str, str], timeout: float = SERVER_START_TIMEOUT_S) -> float:
        """Wait until HAProxy reports every process in ``want`` in that state (e.g. ``{"app1": "DOWN"}``);
        raises if run.sh exits or the time is up. Returns the seconds waited."""
        t0 = time.monotonic()
        states: dict[str, str] = {}
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"deploy/run.sh exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                states = self.states()
            except OSError:  # the socket is not there yet
                pass
            if all(states.get(k) == v for k, v in want.items()):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"HAProxy states {states}, wanted {want} after {timeout:.0f} s:\n"
                                   + self.log_tail())
            time.sleep(0.25)

    def wait_healthy(self, timeout: float = SERVER_START_TIMEOUT_S) -> float:
        """Every app process UP in HAProxy's view, and the balancer answering ``/_stcore/health``."""
        t0 = time.monotonic()
        self.wait_states({name: "UP" for name in self.names}, timeout)
        with _NO_PROXY.open(f"{self.url}/_stcore/health", timeout=10) as resp:
            if resp.status != 200:
                raise RuntimeError(f"balancer health: HTTP {resp.status}")
        return time.monotonic() - t0

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for path in [self.log_path, self.run_dir / "run.log", self.run_dir / "haproxy.log",
                     *(self.app_log(n) for n in self.names)]:
            try:
                tail = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            out.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def stop(self) -> None:
        """SIGTERM run.sh's process group (its trap stops the app processes and HAProxy), SIGKILL
        whatever lingers."""
        try:
            if self.proc.returncode is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGTERM)
                    self.proc.wait(timeout=30)
                except ProcessLookupError:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    pass
            try:  # run.sh is gone; anything left in its group (a stuck app process) goes now
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if self.proc.returncode is None:
                self.proc.wait(timeout=15)
        finally:
            if not self._log.closed:
                self._log.close()
            shutil.rmtree(self.keras_home, ignore_errors=True)

    def __enter__(self) -> "Deployment":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


_PROBLEM = re.compile(r"Traceback|Exception|Error|ERROR|WARNING|unexpected error|exceeds the limit|Rejecting")


# Start-up noise, not a problem: TensorFlow's C++ logging says this once per process on import.
_NOISE = re.compile(r"All log messages before absl::InitializeLog\(\) is called are written to STDERR")


def log_problems_text(text: str) -> list[str]:
    """Lines of server log text that report a problem (tracebacks, errors, exceptions, warnings)."""
    return [ln for ln in text.splitlines() if _PROBLEM.search(ln) and not _NOISE.search(ln)]


def log_problems(log_path: Path) -> list[str]:
    try:
        return log_problems_text(Path(log_path).read_text(errors="replace"))
    except OSError:
        return []


# --------------------------------------------------------------------------- memory / CPU


def _status_kb(pid: int, field_name: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """Child processes, recursively (through /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                kids = [int(k) for k in open(f"/proc/{p}/task/{t}/children").read().split()]
            except (OSError, ValueError):
                continue
            out += kids
            todo += kids
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    try:
        fields_ = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used so far (all cores; /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    return (sum(vals[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # guest time is already in user


class MemorySampler(threading.Thread):
    """Polls VmRSS of the server and of its descendants every ``interval`` s."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int, int]] = []  # (t, server kB, children kB)
        self._stop_evt = threading.Event()

    def sample(self) -> tuple[int, int]:
        server = _status_kb(self.pid, "VmRSS")
        kids = sum(_status_kb(k, "VmRSS") for k in descendants(self.pid))
        self.samples.append((time.monotonic(), server, kids))
        return server, kids

    def run(self) -> None:
        while not self._stop_evt.is_set():
            self.sample()
            self._stop_evt.wait(self.interval)

    def stop(self) -> dict:
        self._stop_evt.set()
        self.join(timeout=5)
        self.sample()
        return {
            "peak_rss_mb": max(s + k for _, s, k in self.samples) / 1024,
            "peak_server_rss_mb": max(s for _, s, _ in self.samples) / 1024,
            "peak_children_rss_mb": max(k for _, _, k in self.samples) / 1024,
            "end_rss_mb": (self.samples[-1][1] + self.samples[-1][2]) / 1024,
            "vm_hwm_mb": _status_kb(self.pid, "VmHWM") / 1024,
            "n_samples": len(self.samples),
        }


# --------------------------------------------------------------------------- one session


@dataclass
class RunResult:
    """One script run of one session, as the client saw it."""

    step: str
    seconds: float = float("nan")  # BackMsg sent -> script_finished received
    finished: bool = False
    status: Optional[int] = None
    errors: list[str] = field(default_factory=list)
    messages: int = 0
    bytes: int = 0
    refs: int = 0  # elements answered by ref_hash (the client had them cached)
    media_seconds: float = 0.0
    assets_seconds: float = 0.0


class Session:
    """One browser tab's worth of Streamlit protocol: connect, rerun, change widgets, close."""

    def __init__(self, base_url: str, name: str = "", query: str = "",
                 cookies: Optional[dict[str, str]] = None):
        """``cookies``: what the session's "browser" already holds, e.g. ``{STICKY_COOKIE: "app2"}``
        to open it on one given process behind the balancer."""
        self.base_url = base_url.rstrip("/")
        self.ws_url = self.base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/_stcore/stream"
        self.name = name
        self.query = query.lstrip("?")
        self.ws: Any = None
        self.page_script_hash = ""
        self.cache: dict[str, ForwardMsg] = {}  # hash -> cacheable message, as the frontend keeps them
        self.changed: dict[str, WidgetState] = {}  # widget key -> the value this client set
        self.widget_ids: dict[str, str] = {}  # widget key -> id in the last run
        self.elements: dict[tuple, Any] = {}  # delta path -> Element proto, last run
        self.keyed: dict[str, Any] = {}  # element key -> Element proto, last run
        self.seen_media: set[str] = set()
        self.results: list[RunResult] = []
        self.cookies: dict[str, str] = dict(cookies or {})
        #: (request, X-Served-By of its response or "") for every HTTP request and websocket
        #: handshake of this session, in order; "" when no balancer answered.
        self.served_by: list[tuple[str, str]] = []

    # ---- cookies (the balancer's stickiness cookie, Streamlit's XSRF cookie)

    def cookie_header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}

    def absorb(self, what: str, headers: Any) -> None:
        """Keep the cookies a response sets and note which process answered it."""
        for value in headers.get_all("Set-Cookie") or []:
            jar = http.cookies.SimpleCookie()
            try:
                jar.load(value)
            except http.cookies.CookieError:
                continue
            self.cookies.update({k: m.value for k, m in jar.items()})
        self.served_by.append((what, headers.get(SERVED_BY, "") or ""))

    def processes(self) -> set[str]:
        """The app processes that answered this session (``X-Served-By``), over all its requests."""
        return {who for _, who in self.served_by}

    # ---- connection

    async def connect(self) -> None:
        self.ws = await websockets.connect(self.ws_url, additional_headers=self.cookie_header(), **_WS_KW)
        response = getattr(self.ws, "response", None)
        if response is not None:
            self.absorb("websocket /_stcore/stream", response.headers)

    async def close(self) -> None:
        if self.ws is not None:
            try:
                await self.ws.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    # ---- widgets

    def element(self, key: str) -> Any:
        """The Element proto of the keyed element ``key`` in the last run (KeyError if absent)."""
        return self.keyed[key]

    def widget(self, key: str) -> Any:
        el = self.keyed[key]
        return getattr(el, el.WhichOneof("type"))

    def select(self, key: str, option: str | Callable[[str], bool]) -> str:
        """Set selectbox ``key`` to the displayed option equal to ``option`` (or matching it)."""
        options = list(self.widget(key).options)
        match = option if callable(option) else (lambda o: o == option)
        found = [o for o in options if match(o)]
        if not found:
            raise KeyError(f"no option {option!r} in selectbox {key!r}: {options}")
        ws = WidgetState()
        ws.string_value = found[0]
        self.changed[key] = ws
        return found[0]

    def set_number(self, key: str, value: float) -> None:
        ws = WidgetState()
        ws.double_value = float(value)
        self.changed[key] = ws

    def _client_state(self, msg: BackMsg) -> None:
        cs = msg.rerun_script
        cs.query_string = self.query
        cs.page_script_hash = self.page_script_hash
        for key, state in self.changed.items():
            wid = self.widget_ids.get(key)
            if wid is None:
                continue  # the widget is not on the page (any more)
            ws = cs.widget_states.widgets.add()
            ws.CopyFrom(state)
            ws.id = wid
        cs.cached_message_hashes.extend(self.cache)
        ci = cs.context_info
        ci.url = f"{self.base_url}/" + (f"?{self.query}" if self.query else "")
        ci.timezone, ci.timezone_offset, ci.locale = "UTC", 0, "en-US"
        ci.is_embedded, ci.color_scheme = False, "light"

    # ---- runs

    async def run(self, step: str, timeout: float = STEP_TIMEOUT_S, fetch_page: bool = False) -> RunResult:
        """One rerun with the current client state; waits for ``script_finished``."""
        res = RunResult(step)
        if fetch_page:
            t = time.perf_counter()
            err = await asyncio.to_thread(_fetch_page, self.base_url, self)
            res.assets_seconds = time.perf_counter() - t
            if err:
                res.errors.append(err)
        try:
            if self.ws is None:
                await self.connect()
            back = BackMsg()
            self._client_state(back)
            elements: dict[tuple, Any] = {}
            t0 = time.perf_counter()
            await self.ws.send(back.SerializeToString())
            await asyncio.wait_for(self._read_until_finished(res, elements), timeout)
            res.seconds = time.perf_counter() - t0
        except asyncio.TimeoutError:
            res.errors.append(f"no script_finished within {timeout:.0f} s")
            self.results.append(res)
            return res
        except websockets.ConnectionClosed as exc:
            res.errors.append(f"websocket closed: {exc}")
            self.results.append(res)
            return res
        except OSError as exc:
            res.errors.append(f"connection failed: {exc}")
            self.results.append(res)
            return res
        self.elements = elements
        self.keyed = {}
        self.widget_ids = {}
        for el in elements.values():
            kind = el.WhichOneof("type")
            key = user_key(getattr(getattr(el, kind), "id", "") if kind else "")
            if key:
                self.keyed[key] = el
                self.widget_ids[key] = getattr(el, kind).id
        media = sorted({img.url for el in elements.values() if el.WhichOneof("type") == "imgs"
                        for img in el.imgs.imgs if img.url and img.url not in self.seen_media})
        if media:
            t = time.perf_counter()
            errs = await asyncio.to_thread(_fetch_all, self.base_url, media, self)
            res.media_seconds = time.perf_counter() - t
            res.errors += errs
            self.seen_media.update(media)
        self.results.append(res)
        return res

    async def _read_until_finished(self, res: RunResult, elements: dict) -> None:
        while True:
            raw = await self.ws.recv()
            if isinstance(raw, str):
                res.errors.append("text frame from the server")
                continue
            res.messages += 1
            res.bytes += len(raw)
            msg = ForwardMsg()
            msg.ParseFromString(raw)
            kind = msg.WhichOneof("type")
            if kind == "ref_hash":
                cached = self.cache.get(msg.ref_hash)
                if cached is None:
                    res.errors.append(f"cached ForwardMsg miss [hash={msg.ref_hash}]")
                    continue
                res.refs += 1
                metadata = msg.metadata
                msg = ForwardMsg()
                msg.CopyFrom(cached)
                msg.metadata.CopyFrom(metadata)
                kind = msg.WhichOneof("type")
            elif msg.metadata.cacheable and msg.hash:
                self.cache[msg.hash] = msg
            if kind == "new_session":
                self.page_script_hash = msg.new_session.page_script_hash
            elif kind == "page_info_changed":
                self.query = msg.page_info_changed.query_string
            elif kind == "session_event":
                if msg.session_event.HasField("script_compilation_exception"):
                    res.errors.append("script compilation exception: "
                                      + msg.session_event.script_compilation_exception.message)
            elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                el = msg.delta.new_element
                elements[tuple(msg.metadata.delta_path)] = el
                etype = el.WhichOneof("type")
                if etype == "exception":
                    res.errors.append(f"exception element: {el.exception.type}: {el.exception.message}")
                elif etype == "alert" and el.alert.format == Alert.ERROR:
                    res.errors.append(f"error alert: {el.alert.body}")
            elif kind == "script_finished":
                res.status = msg.script_finished
                res.finished = True
                if msg.script_finished != FINISHED_OK:
                    res.errors.append("script_finished status "
                                      + ForwardMsg.ScriptFinishedStatus.Name(msg.script_finished))
                return

    # ---- what the page shows (for isolation checks)

    def chart_spec(self, key: str) -> dict:
        return json.loads(self.element(key).plotly_chart.spec)

    def caption(self) -> str:
        """The caption of the first image on the main page ("<image name>, as <model> sees it: ...")."""
        for path in sorted(self.elements):
            el = self.elements[path]
            if path[0] == 0 and el.WhichOneof("type") == "imgs" and el.imgs.imgs:
                return el.imgs.imgs[0].caption
        return ""


def http_get(url: str, timeout: float = 60, session: Optional[Session] = None) -> bytes:
    """GET ``url``; with a ``session``, sending its cookies and keeping what the response sets."""
    headers = {"Accept-Encoding": "gzip", **(session.cookie_header() if session else {})}
    req = urllib.request.Request(url, headers=headers)
    what = "GET " + urllib.parse.urlparse(url).path
    try:
        with _NO_PROXY.open(req, timeout=timeout) as resp:
            if session is not None:
                session.absorb(what, resp.headers)
            return resp.read()
    except urllib.error.HTTPError as exc:
        if session is not None and exc.headers is not None:
            session.absorb(what, exc.headers)
        raise


def _fetch_all(base_url: str, paths: list[str], session: Optional[Session] = None) -> list[str]:
    errors = []
    for p in paths:
        url = p if p.startswith("http") else f"{base_url}/{p.lstrip('/')}"
        try:
            http_get(url, session=session)
        except OSError as exc:  # urllib.error.HTTPError is an OSError
            errors.append(f"GET {p}: {exc}")
    return errors


def _fetch_page(base_url: str, session: Optional[Session] = None) -> Optional[str]:
    """What a browser fetches before it opens the websocket: the page, its scripts, health, host config."""
    try:
        html = http_get(f"{base_url}/" + (f"?{session.query}" if session and session.query else ""),
                    session=session).decode("utf-8", "replace")
    except OSError as exc:
        return f"GET /: {exc}"
    paths = sorted(set(_ASSET.findall(html))) + ["_stcore/health", "_stcore/host-config"]
    errs = _fetch_all(base_url, paths, session)
    return "; ".join(errs) or None


# --------------------------------------------------------------------------- the scenario

CMAP_CHOICES = ("magma", "inferno", "plasma", "cividis", "gray", "turbo", "rdbu_r")
DEFAULT_IMAGE = "astronaut_face"


def other_samples() -> list[str]:
    """The bundled sample images other than the default one, in the app's order."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from vizlib.images import SAMPLES

    return [s for s in SAMPLES if s != DEFAULT_IMAGE]


@dataclass
class Plan:
    """What session ``i`` of a load run does (cmap, image and channel depend on i)."""

    cmap: str
    image: str
    channel: int


def plan_for(i: int, images: list[str]) -> Plan:
    return Plan(cmap=CMAP_CHOICES[i % len(CMAP_CHOICES)], image=images[i % len(images)], channel=2 + i % 6)


STEPS = ("load", "cmap", "image", "channel")
#: The channel inspected before the session picks one: with no channel in the link the app opens
#: on the first layer's most active channel for the first image (astronaut_face: channel 1).
DEFAULT_CHANNEL = 1
STEP_TITLES = {
    "load": "first run (page load)",
    "cmap": "colormap change (display only)",
    "image": "sample image change (forward pass, unless another session computed it)",
    "channel": "channel change (display only)",
}


DETAIL_KEY = "detail-conv2d_1"  # the detail heatmap of the bundled model's first conv layer (inspected by default)


def _stops(scale: Any) -> list[tuple[float, tuple[int, int, int]]]:
    """A Plotly colorscale as (position, (r, g, b)) whatever the colour notation (hex or rgb())."""
    import plotly.colors as pc

    out = []
    for pos, color in scale:
        color = str(color).strip()
        if color.startswith("#"):
            rgb = tuple(int(v) for v in pc.hex_to_rgb(color))
        else:
            rgb = tuple(int(round(float(v))) for v in pc.unlabel_rgb(color))[:3]
        out.append((round(float(pos), 6), rgb))
    return out


def same_colorscale(scale: Any, name: str) -> bool:
    """Is a chart's ``colorscale`` the Plotly colormap ``name`` (same stops, same colours)?"""
    import plotly.colors as pc

    try:
        return _stops(scale or []) == _stops(pc.get_colorscale(name))
    except (ValueError, TypeError):
        return False


def state_mismatches(s: Session, step: str, plan: Plan) -> list[str]:
    """What the session's page shows that is not ITS state after ``step`` (another session's
    colormap, image or channel, or a missing chart): the page must follow its own widgets."""
    cmap = "viridis" if step == "load" else plan.cmap
    image = plan.image if step in ("image", "channel") else DEFAULT_IMAGE
    channel = plan.channel if step == "channel" else DEFAULT_CHANNEL
    out = []
    if not s.caption().startswith(f"{image},"):
        out.append(f"state: caption {s.caption()!r}, expected image {image}")
    try:
        spec = s.chart_spec(DETAIL_KEY)
    except KeyError:
        return out + [f"state: no {DETAIL_KEY} chart on the page"]
    if not same_colorscale(spec["data"][0].get("colorscale"), cmap):
        out.append(f"state: detail heatmap not in {cmap}")
    title = spec["layout"]["title"]["text"]
    if f"channel {channel} " not in title:
        out.append(f"state: detail title {title!r}, expected channel {channel}")
    return out


async def session_flow(base_url: str, i: int, plan: Plan, *, think: float, rng: random.Random,
                       start: Optional[asyncio.Event] = None, ramp: float = 0.0,
                       snapshot: Optional[Callable[[Session, str], None]] = None,
                       fetch_page: bool = True) -> Session:
    """load -> colormap -> sample image -> channel, each step after the previous one finished
    (plus a random think time in [0, think] s). After each run the page is checked against the
    session's own state (:func:`state_mismatches`, counted as errors). Stops at the first step
    that did not finish."""
    s = Session(base_url, name=f"s{i:02d}")
    if start is not None:
        await start.wait()
    if ramp:
        await asyncio.sleep(rng.uniform(0, ramp))

    async def step(name: str, change: Optional[Callable[[], None]]) -> bool:
        if change is not None:
            if think:
                await asyncio.sleep(rng.uniform(0, think))
            try:
                change()
            except KeyError as exc:  # the widget isn't on the page: the previous run went wrong
                s.results.append(RunResult(name, errors=[f"cannot change: {exc}"]))
                return False
        res = await s.run(name, fetch_page=fetch_page and name == "load")
        if res.finished:
            res.errors += state_mismatches(s, name, plan)
            if snapshot is not None:
                snapshot(s, name)
        return res.finished

    try:
        ok = await step("load", None)
        ok = ok and await step("cmap", lambda: s.select("cmap", plan.cmap))
        ok = ok and await step("image", lambda: s.select("image", lambda o: o.split(" ")[0] == plan.image))
        ok = ok and await step("channel", lambda: s.set_number("channel", plan.channel))
    finally:
        await s.close()
    return s


async def run_load(base_url: str, n: int, *, think: float = 0.0, ramp: float = 0.0, seed: int = 0,
                   snapshot: Optional[Callable[[Session, str], None]] = None,
                   fetch_page: bool = True) -> tuple[list[Session], float]:
    """``n`` sessions at once (released together, then ``ramp`` s of random offset); returns the
    sessions and the wall time from release to the last session done."""
    images = other_samples()
    start = asyncio.Event()
    rng = random.Random(seed)
    tasks = [asyncio.create_task(session_flow(base_url, i, plan_for(i, images), think=think,
                                              rng=random.Random(rng.random()), start=start, ramp=ramp,
                                              snapshot=snapshot, fetch_page=fetch_page))
             for i in range(n)]
    await asyncio.sleep(0)
    t0 = time.perf_counter()
    start.set()
    sessions = await asyncio.gather(*tasks)
    return list(sessions), time.perf_counter() - t0


def summarise(sessions: list[Session], wall: float) -> dict:
    """Per step: count, finished, errors, p50/p95/max seconds; totals."""
    by_step: dict[str, list[RunResult]] = {}
    for s in sessions:
        for r in s.results:
            by_step.setdefault(r.step, []).append(r)
    steps = {}
    for name in STEPS:
        rs = by_step.get(name, [])
        times = [r.seconds for r in rs if r.finished]
        steps[name] = {
            "runs": len(rs), "finished": sum(r.finished for r in rs),
            "errors": sum(len(r.errors) for r in rs),
            "p50_s": percentile(times, 50), "p95_s": percentile(times, 95),
            "max_s": max(times) if times else float("nan"),
            "mean_s": statistics.fmean(times) if times else float("nan"),
            "kb_per_run": statistics.fmean([r.bytes for r in rs]) / 1024 if rs else float("nan"),
            "refs_per_run": statistics.fmean([r.refs for r in rs]) if rs else float("nan"),
        }
    runs = [r for s in sessions for r in s.results]
    done = [r.seconds for r in runs if r.finished]
    homes: dict[str, int] = {}
    for s in sessions:
        for who in sorted(s.processes() - {""}) or ["(direct)"]:
            homes[who] = homes.get(who, 0) + 1
    return {
        "sessions": len(sessions),
        "all_p50_s": percentile(done, 50), "all_p95_s": percentile(done, 95),
        "all_times_s": done,
        "step_times_s": {name: [r.seconds for r in by_step.get(name, []) if r.finished] for name in STEPS},
        # behind the balancer: how many sessions each app process answered (X-Served-By)
        "sessions_per_process": homes,
        "steps": steps,
        "runs": len(runs),
        "finished": sum(r.finished for r in runs),
        "errors": sum(len(r.errors) for r in runs),
        "error_messages": sorted({f"{r.step}: {e}" for r in runs for e in r.errors}),
        "wall_s": wall,
        "reruns_per_s": sum(r.finished for r in runs) / wall if wall else float("nan"),
        "assets_p50_s": percentile([r.assets_seconds for r in runs if r.step == "load"], 50),
        "media_p50_s": percentile([r.media_seconds for r in runs if r.media_seconds], 50),
    }
