"""End-to-end fixtures: the real app under `streamlit run`, driven by a real Chromium.

* ``server`` (session): one ``streamlit run app.py`` for the whole browser suite, on a free
  port, with an empty Keras cache (so the default model is the bundled, offline one). Its
  process group is always killed at the end.
* ``browser`` (session): Debian's Chromium through Playwright's sync API. Playwright's own
  browser download does not work here, so ``executable_path`` points at the system binary.
  Missing Chromium or Playwright skips the suite locally and fails it in CI (``CI`` set).
* ``app`` (per test): a fresh browser context (1400x1000) and page, wrapped in
  :class:`AppPage` with the waiting / checking helpers the tests share, collecting console
  errors and page errors from the first request on.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

import pytest

from optional import missing as _missing  # skip here, fail in CI: one rule for every optional tool

ROOT = Path(__file__).resolve().parents[2]  # tests/browser/conftest.py -> repo root
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
FAILURES = ROOT / "test-artifacts" / "failures"
VIEWPORT = {"width": 1400, "height": 1000}
SERVER_START_TIMEOUT_S = 120
# The first page of a session pays for importing TensorFlow and loading the model in the server.
FIRST_PAINT_TIMEOUT_MS = 120_000
ACTION_TIMEOUT_MS = 60_000
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
    # A fake camera (Chromium's test pattern) that needs no permission prompt: for st.camera_input.
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]


def find_chromium() -> Optional[str]:
    explicit = os.environ.get("CHROMIUM_PATH")
    if explicit:
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- report hook


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, so the page fixture can screenshot failures."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def playwright_api():
    try:
        import playwright.sync_api as api
    except ImportError:  # pragma: no cover - CI installs requirements-dev.txt
        _missing("playwright is not installed: pip install -r requirements-dev.txt")
    api.expect.set_options(timeout=ACTION_TIMEOUT_MS)
    return api


@pytest.fixture(scope="session")
def playwright_driver(playwright_api):
    """The one Playwright driver of the session (a second ``sync_playwright()`` in the same thread fails):
    every browser a test launches comes from it."""
    with playwright_api.sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright_driver):
    executable = find_chromium()
    if executable is None:
        _missing("Chromium not found: install Debian's chromium (apt-get install chromium) "
                 "or point CHROMIUM_PATH at a Chromium binary")
    b = playwright_driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """``streamlit run app.py`` from the repo root on a free port, as a :class:`Server`."""
    with launch_server(tmp_path_factory.mktemp("server")) as srv:
        yield srv


@contextlib.contextmanager
def launch_server(workdir: Path, extra_env: Optional[dict] = None, wait_healthy: bool = True):
    """Start ``streamlit run app.py`` (files under ``workdir``), wait until healthy, yield a :class:`Server`.

    ``wait_healthy=False``: yield as soon as the port accepts a TCP connection (before the health check).
    """
    keras_home = workdir / "keras_home"  # empty: no ImageNet weights cached
    cache_dir = workdir / "cnn_viz_cache"  # empty: feature visualisations are computed
    keras_home.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "server.log"
    port = free_port()
    # CNN_VIZ_OFFLINE: the app behaves as on a machine with no network, whatever this one has.
    env = dict(os.environ, KERAS_HOME=str(keras_home), TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
               CNN_VIZ_OFFLINE="1", CNN_VIZ_CACHE_DIR=str(cache_dir), **(extra_env or {}))
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py",
           "--server.port", str(port), "--server.address", "127.0.0.1",
           "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + SERVER_START_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"streamlit exited with {proc.returncode} before it was healthy:\n"
                                + _tail(log_path), pytrace=False)
                if wait_healthy and http_status(f"{base}/_stcore/health") == 200:
                    break
                if not wait_healthy and port_open(port):
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"streamlit not healthy after {SERVER_START_TIMEOUT_S} s:\n" + _tail(log_path),
                                pytrace=False)
                time.sleep(0.25)  # polling the health endpoint, not waiting for the page
            yield Server(base, log_path)
        finally:
            _kill_group(proc)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def http_status(url: str, timeout: float = 2.0) -> Optional[int]:
    """The HTTP status of a GET to a loopback ``url`` (None if it can't connect), never via a proxy."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


@dataclass(frozen=True)
class Server:
    url: str
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's whole process group (it leads its own session), SIGKILL if it lingers."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # even if the leader is gone: its children may not be
        proc.wait(timeout=15)
    except ProcessLookupError:
        proc.wait(timeout=15)
        return
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        proc.wait(timeout=15)


@pytest.fixture
def app(browser, server, playwright_api, request):
    """A fresh context + page on the running app, as an :class:`AppPage`."""
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1, permissions=["camera"],
                                  accept_downloads=True)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    ap = AppPage(page, server.url, playwright_api.expect)
    try:
        yield ap
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            try:
                FAILURES.mkdir(parents=True, exist_ok=True)
                name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
                page.screenshot(path=str(FAILURES / f"{name}.png"))
                request.node.add_report_section(
                    "call", "browser", f"screenshot: {FAILURES / (name + '.png')}\nconsole errors: {ap.errors}\n"
                                       f"server log (tail):\n{server.log_tail()}")
            except Exception:  # noqa: BLE001 - best effort only
                pass
        context.close()


# --------------------------------------------------------------------------- page helpers

# Console errors that say nothing about this app would be filtered here, each with its
# reason. None is needed today: a run of the whole suite logs no console error at all (the
# favicon is an inline data: URL, so not even a favicon 404). Streamlit's frontend does log
# "Invalid color passed for ... in theme.sidebar" *warnings*; only errors are collected.
IGNORED_CONSOLE: list[re.Pattern] = []


def _is_noise(text: str, url: str) -> bool:
    probe = f"{text} {url}"
    return any(p.search(probe) for p in IGNORED_CONSOLE)


# Runs in the page. A chart counts as painted when Plotly has drawn its trace content:
# an <image> with a data URL (the go.Image mosaic in .imagelayer, the go.Heatmap in
# .heatmaplayer) or bar paths (.barlayer). "Done" is: no status widget (script idle), no
# stale elements, >= n painted charts, and all of that unchanged for `quiet` ms, so a
# rerun that has been triggered but not yet shown its running indicator is not missed.
_PAINTED_JS = """
([n, quiet]) => {
  const paintedChart = (p) => {
    const imgs = [...p.querySelectorAll('.imagelayer image, .heatmaplayer image')];
    if (imgs.some(i => {
        const href = i.getAttribute('href') || i.getAttribute('xlink:href') || '';
        return href.startsWith('data:image/') && href.length > 100 && parseFloat(i.getAttribute('width') || '0') > 0;
    })) return true;
    return p.querySelectorAll('.barlayer .point path').length > 0;
  };
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  const ok = !document.querySelector('[data-testid="stStatusWidget"]')
    && !document.querySelector('[data-stale="true"]')
    && plots.length >= n && plots.every(paintedChart);
  const sig = ok ? plots.length + '|' + [...document.querySelectorAll('.js-plotly-plot .gtitle')]
      .map(t => t.textContent).join('|') : null;
  const now = performance.now();
  if (!ok || window.__e2eSig !== sig) { window.__e2eSig = sig; window.__e2eSince = now; return false; }
  return now - window.__e2eSince >= quiet;
}
"""


def current_url(page: Any) -> str:
    """``location.href`` of ``page`` (see :attr:`AppPage.url`)."""
    return page.evaluate("location.href")


class AppPage:
    """One browser page on the app, with the shared waits and checks."""

    def __init__(self, page: Any, base_url: str, expect: Any):
        self.page = page
        self.base_url = base_url
        self.expect = expect
        self.errors: list[str] = []
        self.external_requests: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("request", self._on_request)

    def _on_console(self, msg: Any) -> None:
        if msg.type != "error":
            return
        url = (msg.location or {}).get("url", "")
        if not _is_noise(msg.text, url):
            self.errors.append(f"console.error: {msg.text} ({url})")

    def _on_request(self, request: Any) -> None:
        # The app must work offline: the page may only talk to its own server.
        url = urlparse(request.url)
        if url.scheme in ("http", "https", "ws", "wss") and url.hostname not in ("127.0.0.1", "localhost"):
            self.external_requests.append(request.url)

    # ---- navigation and waiting

    @property
    def url(self) -> str:
        """The address bar as the page has it. Playwright's ``page.url`` can lag a ``history.replaceState``
        (Streamlit's way of writing query parameters) by one update: measured, it still named the previous
        view after a view change, while ``location.href`` named the new one."""
        return current_url(self.page)

    def wait_url(self, part: str, timeout: float = 60_000) -> None:
        """Wait until the address bar contains ``part`` (``location.href``: see :attr:`url`)."""
        self.page.wait_for_function("(part) => location.href.includes(part)", arg=part, timeout=timeout)

    def open(self, query: str = "", n_charts: int = 4) -> "AppPage":
        self.page.goto(f"{self.base_url}/{query}", wait_until="domcontentloaded")
        self.wait_painted(n_charts, timeout=FIRST_PAINT_TIMEOUT_MS)
        return self

    def wait_painted(self, n_charts: int, timeout: float = ACTION_TIMEOUT_MS, quiet_ms: int = 400) -> None:
        wait_painted(self.page, n_charts, timeout=timeout, quiet_ms=quiet_ms)

    def wait_idle(self, timeout: float = ACTION_TIMEOUT_MS) -> None:
        """The script finished (for pages with no chart, e.g. an error page)."""
        wait_painted(self.page, 0, timeout=timeout)

    def chart(self, key: str) -> Any:
        """The Plotly chart drawn with ``st.plotly_chart(..., key=key)``."""
        return self.page.locator(f".st-key-{key} .js-plotly-plot")

    def titles(self) -> list[str]:
        return self.page.locator(".js-plotly-plot .gtitle").all_text_contents()

    def wait_title(self, *parts: str, timeout: float = ACTION_TIMEOUT_MS) -> None:
        """Wait until some chart title contains every one of ``parts``."""
        self.page.wait_for_function(
            """(parts) => [...document.querySelectorAll('.js-plotly-plot .gtitle')]
                 .some(t => parts.every(p => t.textContent.includes(p)))""",
            arg=list(parts), timeout=timeout)

    # ---- widgets (Streamlit puts a `st-key-<key>` class on every keyed element)

    def select(self, key: str, option: str, *, typed: Optional[str] = None, exact: bool = True) -> None:
        """Pick ``option`` in the selectbox with widget key ``key`` (typing to filter long lists)."""
        box = self.page.locator(f".st-key-{key} input[role=combobox]")
        box.click()
        if typed:
            box.fill(typed)
        choice = self.page.get_by_role("option", name=option, exact=exact)
        try:  # a freshly painted combobox sometimes ignores its first click
            choice.wait_for(state="visible", timeout=3_000)
        except Exception:  # noqa: BLE001 - Playwright's TimeoutError
            box.click()
            if typed:
                box.fill(typed)
        choice.click()

    def segmented(self, key: str, label: str) -> None:
        self.page.locator(f".st-key-{key}").get_by_role("radio", name=label, exact=True).click()

    def radio(self, key: str, label: str) -> None:
        self.page.locator(f".st-key-{key}").get_by_text(label, exact=True).click()

    # ---- checks

    def assert_no_error_elements(self) -> None:
        for testid in ("stException", "stAlertContentError"):
            found = self.page.locator(f'[data-testid="{testid}"]')
            assert found.count() == 0, f"{testid} on the page: {found.all_inner_texts()}"

    def assert_quiet(self) -> None:
        """No console errors, no page errors, no request leaving the machine (the app is offline)."""
        assert not self.errors, "\n".join(self.errors)
        assert not self.external_requests, f"requests off the machine: {self.external_requests}"

    def assert_clean(self) -> None:
        """:meth:`assert_quiet`, and no exception or error element on the page."""
        self.assert_no_error_elements()
        self.assert_quiet()

    def screenshot(self, name: str, anchor_key: str = "view") -> Path:
        """A viewport screenshot with the element keyed ``anchor_key`` scrolled to the top
        (just below Streamlit's header), so the charts of the view are in the picture."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        anchor = self.page.locator(f".st-key-{anchor_key}")
        if anchor.count():
            anchor.first.evaluate("el => { el.style.scrollMarginTop = '72px'; el.scrollIntoView({block: 'start'}); }")
        self.page.mouse.move(2, 2)  # no hover label or mode bar in the picture
        self.page.wait_for_timeout(150)  # tiny settle: let the scroll and hover-out paint
        self.page.screenshot(path=str(path))
        return path


def wait_painted(page: Any, n_charts: int, *, timeout: float = ACTION_TIMEOUT_MS, quiet_ms: int = 400) -> None:
    """Wait until the app is idle and at least ``n_charts`` Plotly charts have painted content.

    The script finishing is not the chart painting: Plotly draws after the element arrives.
    See ``_PAINTED_JS`` for what counts.
    """
    page.wait_for_function(_PAINTED_JS, arg=[n_charts, quiet_ms], timeout=timeout, polling=100)
