"""The deployment of ``deploy/``: two app processes behind HAProxy, as a lecture hall meets it.

``deploy/run.sh 2`` (``benchmarks/_load_client.py``'s :class:`Deployment`: free loopback ports,
an empty Keras cache, offline) starts two ``streamlit run app.py`` processes and HAProxy in
front of them. Driven here by the protocol-level load client (several sessions at once, no
browser) and by real Chromium pages (the harness of ``conftest.py``). What is asserted:

* stickiness: every request of a session (page, scripts, websocket, /media, uploads) is
  answered by ONE process (HAProxy's ``X-Served-By`` header), and new sessions are spread
  over both processes;
* isolation: every session sees its own colormap, image and channel (the load client's
  checks), with no error of any kind;
* media and uploads work through the balancer, and a session's media exist only in its own
  process (so the stickiness is what makes them work);
* losing a process: one app process is killed (SIGKILL) while a browser tab on it has a
  change in flight and another tab on it sits idle. HAProxy marks it down, both tabs
  reconnect to the survivor and get their view back from the URL (image, channel,
  colormap): the busy tab at once (Streamlit's page asks for a rerun when it reconnects
  mid-run), the idle one at its next change. No error element, no error dialog, no console
  error (but for the dead process's own st.image files, which die with it); a tab on the
  survivor is untouched (same websocket, its upload still there); run.sh starts the killed
  process again.

HAProxy missing: skipped on a developer machine, a failure in CI (``.ci/run`` installs it).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import signal
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional, Union
from urllib.error import HTTPError
from urllib.parse import parse_qs, urlparse

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import _load_client as L  # noqa: E402
from conftest import current_url  # noqa: E402

pytestmark = pytest.mark.browser

PROCESSES = 2
SESSIONS = 6  # protocol-level sessions released together
COMPARE_CHARTS = 4  # predictions, first-layer grid, last-layer grid, detail heatmap
RECOVERY_TIMEOUT_S = 90
VICTIM, SURVIVOR = "app1", "app2"


def _harness(config: Any) -> ModuleType:
    """tests/browser/conftest.py as pytest loaded it (AppPage, the Chromium settings, ...)."""
    path = Path(__file__).with_name("conftest.py").resolve()
    for plugin in config.pluginmanager.get_plugins():
        f = getattr(plugin, "__file__", None)
        if f and Path(f).resolve() == path:
            return plugin
    spec = importlib.util.spec_from_file_location("_browser_conftest", path)  # pragma: no cover
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def H(pytestconfig) -> ModuleType:
    return _harness(pytestconfig)


@pytest.fixture(scope="module")
def deployment(H, tmp_path_factory):
    """``deploy/run.sh 2`` on loopback, both processes UP in HAProxy's view; stopped at the end."""
    if L.find_haproxy() is None:
        H._missing("haproxy not found: install Debian's haproxy (apt-get install haproxy)")
    # The killed process comes back only after the moved tabs have reconnected to the survivor:
    # with a short delay a loaded machine could let a tab reconnect to the restarted process.
    d = L.Deployment(PROCESSES, tmp_path_factory.mktemp("deploy"), restart_delay=20)
    try:
        d.wait_healthy()
        yield d
    finally:
        d.stop()


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def log_since(path: Path, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


# --------------------------------------------------------------------------- protocol level


@pytest.fixture(scope="module")
def load_run(deployment):
    """SESSIONS protocol-level sessions at once through the balancer (load -> colormap -> image ->
    channel, each page checked against the session's own state), then a probe of the media."""
    offsets = {n: log_size(deployment.app_log(n)) for n in deployment.names}
    sessions, wall = L.run_async(L.run_load, deployment.url, SESSIONS)

    async def media_probe() -> dict:
        s = L.Session(deployment.url, name="probe")
        try:
            res = await s.run("load", fetch_page=True)
            assert res.finished and not res.errors, res
            home = s.processes()
            assert len(home) == 1, s.served_by
            (home,) = home
            other = next(n for n in deployment.names if n != home)
            media = sorted(s.seen_media)
            out = {"home": home, "media": media, "own": [], "other": []}
            for m in media:
                url = f"{deployment.url}/{m.lstrip('/')}"
                out["own"].append(len(await asyncio.to_thread(L.http_get, url, 30, s)))
                try:
                    await asyncio.to_thread(L.http_get, f"{deployment.app_url(other)}/{m.lstrip('/')}", 30)
                    out["other"].append(200)
                except HTTPError as exc:
                    out["other"].append(exc.code)
            return out
        finally:
            await s.close()

    probe = L.run_async(media_probe)
    logs = {n: log_since(deployment.app_log(n), offsets[n]) for n in deployment.names}
    return {"sessions": sessions, "summary": L.summarise(sessions, wall), "probe": probe, "logs": logs}


def test_each_session_sticks_to_one_process_and_both_are_used(load_run, deployment):
    homes = {}
    for s in load_run["sessions"]:
        assert s.served_by, f"{s.name}: no response recorded"
        unanswered = [what for what, who in s.served_by if not who]
        assert not unanswered, f"{s.name}: responses without X-Served-By (not through HAProxy?): {unanswered}"
        assert len(s.processes()) == 1, f"{s.name} was served by several processes: {s.served_by}"
        assert any(what.startswith("websocket") for what, _ in s.served_by), s.served_by
        (homes[s.name],) = s.processes()
        assert s.cookies.get(L.STICKY_COOKIE) == homes[s.name], (s.name, s.cookies)
    assert set(homes.values()) == set(deployment.names), f"new sessions not spread over the processes: {homes}"


def test_sessions_isolated_and_error_free(load_run):
    summary = load_run["summary"]
    assert summary["errors"] == 0, "\n".join(summary["error_messages"])
    assert summary["finished"] == SESSIONS * len(L.STEPS), summary
    for s in load_run["sessions"]:
        assert [r.step for r in s.results] == list(L.STEPS), f"{s.name} stopped early: {s.results}"
        assert s.seen_media, f"{s.name}: no st.image media fetched"
    # Each session asked for its own colormap and image: no two final first-layer grids agree.
    grids = {s.element("grid-first").plotly_chart.spec for s in load_run["sessions"]}
    assert len(grids) == SESSIONS
    for name, text in load_run["logs"].items():
        problems = L.log_problems_text(text)
        assert not problems, f"{name} log during the load:\n" + "\n".join(problems[:40])


def test_media_served_through_the_balancer_only_by_their_process(load_run):
    probe = load_run["probe"]
    assert probe["media"], "the probe session got no st.image"
    assert all(n > 0 for n in probe["own"]), probe
    # The same URL on the other process does not exist: only the sticky cookie makes media work.
    assert probe["other"] == [404] * len(probe["media"]), probe


# --------------------------------------------------------------------------- real Chromium


class Tab:
    """A Chromium page on the balancer, pinned to one process by the balancer's cookie, that
    records which process answered each response and every websocket with the ForwardMsg
    types it received."""

    def __init__(self, H: ModuleType, browser: Any, expect: Any, deployment: L.Deployment, process: str):
        self.context = browser.new_context(viewport=H.VIEWPORT, device_scale_factor=1)
        self.context.set_default_timeout(H.ACTION_TIMEOUT_MS)
        self.context.add_cookies([{"name": L.STICKY_COOKIE, "value": process, "url": deployment.url}])
        self.page = self.context.new_page()
        self.app = H.AppPage(self.page, deployment.url, expect)
        #: (t the request was sent, method, path, status, served by) of every response of the balancer
        self.responses: list[tuple[float, str, str, int, str]] = []
        self.sockets: list[dict] = []
        #: called once, from the websocket handler, when the server says a run has started
        self.on_running: Optional[Callable[[], None]] = None
        self.requests: list[tuple[float, str]] = []  # (t, path) of every request to the balancer
        self._sent: dict[Any, float] = {}
        self.page.on("request", self._on_request)
        self.page.on("response", self._on_response)
        self.page.on("websocket", self._on_websocket)

    def _on_request(self, r: Any) -> None:
        url = urlparse(r.url)
        if url.port == urlparse(self.app.base_url).port:
            self._sent[r] = time.monotonic()
            self.requests.append((self._sent[r], url.path))

    def _on_response(self, r: Any) -> None:
        url = urlparse(r.url)
        if url.port == urlparse(self.app.base_url).port:
            sent = self._sent.pop(r.request, time.monotonic())
            self.responses.append((sent, r.request.method, url.path, r.status, r.headers.get(L.SERVED_BY.lower(), "")))

    def _on_websocket(self, ws: Any) -> None:
        entry = {"opened": time.monotonic(), "kinds": [], "closed": False, "media": set()}
        self.sockets.append(entry)

        def frame(payload: Any) -> None:
            if isinstance(payload, (bytes, bytearray)):
                msg = L.ForwardMsg()
                msg.ParseFromString(bytes(payload))
                kind = msg.WhichOneof("type")
                entry["kinds"].append(kind)
                if kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                    el = msg.delta.new_element
                    if el.WhichOneof("type") == "imgs":
                        entry["media"].update(urlparse(img.url).path for img in el.imgs.imgs if img.url)
                if kind == "session_status_changed" and msg.session_status_changed.script_is_running \
                        and self.on_running is not None:
                    callback, self.on_running = self.on_running, None
                    callback()

        ws.on("framereceived", frame)
        ws.on("close", lambda *_: entry.update(closed=True))

    def cookie(self) -> str:
        return next((c["value"] for c in self.context.cookies() if c["name"] == L.STICKY_COOKIE), "")

    def served_by(self, since: float = 0.0, until: float = float("inf")) -> set[str]:
        """The processes that answered the requests sent in [since, until)."""
        return {who for t, _, _, _, who in self.responses if since <= t < until}

    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlparse(current_url(self.page)).query).items()}

    def caption(self) -> str:
        return self.page.locator('[data-testid="stMain"] [data-testid="stImageCaption"]').first.inner_text()

    def input_image_loaded(self) -> bool:
        """The input picture (st.image, fetched from /media) is decoded in the page."""
        return self.page.locator('[data-testid="stMain"] [data-testid="stImage"] img').first.evaluate(
            "img => img.complete && img.naturalWidth > 0")

    def wait_until(self, what: str, cond, timeout_s: float = RECOVERY_TIMEOUT_S) -> None:
        """Let the page run (its events reach the handlers above) until ``cond()`` holds."""
        deadline = time.monotonic() + timeout_s
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; cookie {self.cookie()!r}, "
                                     f"sockets {[(len(s['kinds']), s['closed']) for s in self.sockets]}, "
                                     f"errors {self.app.errors}")
            self.page.wait_for_timeout(100)

    def assert_sound(self, lost_before: Optional[float] = None) -> None:
        """No exception or error element, no error dialog, no console/page error.

        ``lost_before``: the moment a process was killed. The st.image files that process
        handed out died with it: a fetch still under way fails (HAProxy: 502) or, sent after
        the move, finds nothing on the survivor (404), and the browser logs that. Those
        errors, and only those, are expected (the survivor's run then sends its own images)."""
        self.app.assert_no_error_elements()
        lost = set().union(*(s["media"] for s in self.sockets if lost_before is not None
                             and s["opened"] < lost_before))
        errors = [e for e in self.app.errors if not any(path in e for path in lost)]
        assert not errors, "\n".join(errors)
        assert not self.app.external_requests, self.app.external_requests
        dialogs = self.page.locator('[role="dialog"]')
        assert dialogs.count() == 0, f"dialog on the page: {dialogs.all_inner_texts()}"

    def close(self) -> None:
        self.context.close()


def pick(tab: Tab, key: str, option: Union[str, re.Pattern]) -> None:
    """Choose ``option`` (its label, or a pattern of it) in the selectbox keyed ``key``. On a page that has just painted, the
    first click on Streamlit 1.64's combobox sometimes leaves its list closed (seen here on
    fresh pages); click again until the list is open."""
    box = tab.page.locator(f".st-key-{key} input[role=combobox]")
    item = tab.page.get_by_role("option", name=option, exact=isinstance(option, str))
    for _ in range(3):
        box.click()
        try:
            item.wait_for(state="visible", timeout=3_000)
            break
        except Exception as exc:  # playwright's TimeoutError: the list did not open
            if "Timeout" not in type(exc).__name__:
                raise
    item.click()


def finished_runs(socket_: dict) -> int:
    return socket_["kinds"].count("script_finished")


@pytest.fixture(scope="module")
def tabs(H, browser, playwright_api, deployment, load_run, tmp_path_factory):
    """Three tabs: ``busy`` and ``idle`` on the process that will be killed, each on its own
    link; ``uploader`` on the survivor, showing an image it uploaded through the balancer."""
    from PIL import Image

    expect = playwright_api.expect
    opened = []
    try:
        busy = Tab(H, browser, expect, deployment, VICTIM)
        opened.append(busy)
        busy.app.open("?image=cat&channel=3&cmap=magma", n_charts=COMPARE_CHARTS)
        idle = Tab(H, browser, expect, deployment, VICTIM)
        opened.append(idle)
        idle.app.open("?image=coffee&channel=5&cmap=plasma", n_charts=COMPARE_CHARTS)

        uploader = Tab(H, browser, expect, deployment, SURVIVOR)
        opened.append(uploader)
        uploader.app.open("?cmap=cividis", n_charts=COMPARE_CHARTS)
        path = tmp_path_factory.mktemp("upload") / "e2e-through-the-balancer.png"
        Image.linear_gradient("L").resize((96, 72)).convert("RGB").save(path, format="PNG")
        uploader.app.radio("source", "Upload")
        file_input = uploader.page.locator('.st-key-image_files input[type="file"]')
        file_input.wait_for(state="attached")
        uploader.app.wait_painted(COMPARE_CHARTS)
        file_input.set_input_files(str(path))
        expect(uploader.page.locator('[data-testid="stMain"] [data-testid="stImageCaption"]').first
               ).to_contain_text(f"{path.name}, as")
        uploader.app.wait_painted(COMPARE_CHARTS)
        yield {"busy": busy, "idle": idle, "uploader": uploader, "upload_name": path.name}
    finally:
        for tab in opened:
            tab.close()


def test_upload_and_media_in_chromium_through_the_balancer(tabs):
    up = tabs["uploader"]
    assert up.served_by() == {SURVIVOR}, up.responses
    uploads = [r for r in up.responses if r[1] == "PUT" and "/_stcore/upload_file/" in r[2]]
    assert uploads and all(r[3] in (200, 204) for r in uploads), up.responses
    media = [r for r in up.responses if r[2].startswith("/media/")]
    assert media and all(r[3] == 200 for r in media), up.responses
    assert up.caption().startswith(f"{tabs['upload_name']}, as"), up.caption()
    assert up.input_image_loaded()
    assert tabs["upload_name"] not in current_url(up.page)  # uploads can't travel in a link
    for name in ("busy", "idle"):
        assert tabs[name].served_by() == {VICTIM}, (name, tabs[name].responses)
        assert tabs[name].input_image_loaded(), name
    for tab in (up, tabs["busy"], tabs["idle"]):
        tab.assert_sound()


def test_sessions_of_a_killed_process_get_their_view_back(tabs, deployment, H):
    busy, idle, up = tabs["busy"], tabs["idle"], tabs["uploader"]
    victim_pid = deployment.app_pid(VICTIM)
    survivor_log = log_size(deployment.app_log(SURVIVOR))
    up_sockets = len(up.sockets)

    # A change in flight when the process dies: `busy` picks another sample image, and the
    # process is frozen (SIGSTOP) the moment it tells the page that the run has started, then
    # killed. If the run was quick enough to finish before the freeze, thaw and try again.
    def freeze() -> None:
        os.kill(victim_pid, signal.SIGSTOP)
        frozen.append(time.monotonic())

    in_flight = False
    # Samples no session has shown on the victim yet (the load run used the first six): each
    # is a forward pass there, the slowest kind of run.
    for image in ("horse", "rocket", "gravel", "hubble", "retina", "grass"):
        link = busy.query()  # what the survivor will start from: the URL before this change
        sock, before = busy.sockets[-1], finished_runs(busy.sockets[-1])
        frozen: list[float] = []
        busy.on_running = freeze
        pick(busy, "image", re.compile(rf"^{image}\b"))
        try:
            busy.wait_until("the run to start", lambda frozen=frozen: bool(frozen), timeout_s=60)
        except AssertionError:  # on a loaded machine the combobox can swallow the choice: once more
            if busy.on_running is None:
                raise
            pick(busy, "image", re.compile(rf"^{image}\b"))
            busy.wait_until("the run to start", lambda frozen=frozen: bool(frozen), timeout_s=60)
        busy.page.wait_for_timeout(300)  # frames the process sent before the freeze arrive
        if finished_runs(sock) == before:
            in_flight = True
            print(f"busy: frozen mid-run on the change to {image}")
            break
        os.kill(victim_pid, signal.SIGCONT)  # the run beat the freeze: this change is done
        busy.app.wait_painted(COMPARE_CHARTS)
    t_kill = time.monotonic()
    os.kill(victim_pid, signal.SIGKILL)
    tabs["killed"] = victim_pid
    assert in_flight, "every run finished before the process could be frozen mid-run"
    deployment.wait_states({VICTIM: "DOWN"}, timeout=30)  # the balancer's checks saw it

    # busy: reconnected to the survivor, which ran the page again from the URL by itself.
    busy.wait_until("busy to reconnect and rerun on the survivor",
                    lambda: busy.cookie() == SURVIVOR and len(busy.sockets) >= 2
                    and busy.sockets[-1]["opened"] > t_kill and finished_runs(busy.sockets[-1]) >= 1)
    busy.app.wait_painted(COMPARE_CHARTS)
    q = view = busy.query()
    # The survivor's fresh session starts from the link: the view as it was before the change
    # that died with the process (an app that honoured the page's widget values on a session's
    # first run would show the new image instead).
    assert (q.get("channel"), q.get("cmap")) == ("3", "magma"), current_url(busy.page)
    assert q.get("image") in (link.get("image"), image), current_url(busy.page)
    assert busy.caption().startswith(f"{q['image']}, as"), busy.caption()
    assert busy.page.locator(".st-key-image input").input_value().startswith(q["image"])
    busy.app.wait_title("conv2d_1, channel 3")
    assert busy.input_image_loaded()
    busy.assert_sound(lost_before=t_kill)

    # idle: reconnected (no run needed: its page is still on screen, nothing went missing).
    idle.wait_until("idle to reconnect to the survivor",
                    lambda: idle.cookie() == SURVIVOR and len(idle.sockets) >= 2
                    and idle.sockets[-1]["opened"] > t_kill and not idle.sockets[-1]["closed"])
    idle.app.wait_painted(COMPARE_CHARTS)
    assert idle.caption().startswith("coffee, as"), idle.caption()
    idle.assert_sound(lost_before=t_kill)
    # Its next change runs on the survivor, in a fresh session seeded from the link: the view
    # (image, channel) comes back from the URL. A fresh session may re-seed the changed widget
    # from the link too (app.py's init_state), so the change applies at the latest on a retry.
    for attempt in (1, 2):
        pick(idle, "cmap", "gray")
        idle.wait_until("idle's change to finish on the survivor",
                        lambda attempt=attempt: finished_runs(idle.sockets[-1]) >= attempt)
        idle.app.wait_painted(COMPARE_CHARTS)
        q = idle.query()
        assert (q.get("image"), q.get("channel")) == ("coffee", "5"), current_url(idle.page)
        assert idle.caption().startswith("coffee, as"), idle.caption()
        idle.assert_sound(lost_before=t_kill)
        if q.get("cmap") == "gray":
            print(f"idle: its first change after the move applied on attempt {attempt}")
            break
    assert idle.query().get("cmap") == "gray", f"the colormap change never applied: {current_url(idle.page)}"

    # busy goes on normally on the survivor.
    pick(busy, "cmap", "turbo")
    busy.app.wait_painted(COMPARE_CHARTS)
    busy.page.wait_for_function("() => new URLSearchParams(location.search).get('cmap') === 'turbo'")
    assert (busy.query().get("image"), busy.query().get("channel")) == (view["image"], "3")
    busy.assert_sound(lost_before=t_kill)
    for tab in (busy, idle):
        # A request the dead process had taken can't be retried: HAProxy answers it itself (a 5xx, without
        # X-Served-By: no process served it) and the page retries. Every answer from a process is the survivor's.
        after = [r for r in tab.responses if r[0] >= t_kill]
        if any(not r[4] for r in after):
            print("answered by HAProxy itself after the kill:", [r for r in after if not r[4]])
        assert {who for *_, who in after if who} == {SURVIVOR}, tab.responses
        assert all(status >= 500 for _, _, _, status, who in after if not who), [r for r in after if not r[4]]

    # uploader (on the survivor) never noticed: same websocket, its upload still there.
    pick(up, "cmap", "magma")
    up.app.wait_painted(COMPARE_CHARTS)
    up.page.wait_for_function("() => new URLSearchParams(location.search).get('cmap') === 'magma'")
    assert len(up.sockets) == up_sockets and not up.sockets[-1]["closed"], up.sockets
    assert up.caption().startswith(f"{tabs['upload_name']}, as"), up.caption()
    assert up.served_by() == {SURVIVOR}
    up.assert_sound()

    problems = L.log_problems_text(log_since(deployment.app_log(SURVIVOR), survivor_log))
    assert not problems, f"{SURVIVOR} log:\n" + "\n".join(problems[:40])


def test_killed_process_is_started_again(tabs, deployment):
    """run.sh starts a process that died again, and HAProxy takes it back once it is healthy.

    In a full run the test before killed it; run on its own, this test kills it."""
    if not tabs.get("killed"):  # run on its own: kill the process here, as the test before does
        victim_pid = deployment.app_pid(VICTIM)
        os.kill(victim_pid, signal.SIGKILL)
        tabs["killed"] = victim_pid
        deployment.wait_states({VICTIM: "DOWN"}, timeout=30)
    deployment.wait_states({VICTIM: "UP", SURVIVOR: "UP"}, timeout=L.SERVER_START_TIMEOUT_S)
    assert deployment.app_pid(VICTIM) != tabs["killed"]
    run_log = (deployment.run_dir / "run.log").read_text()
    assert f"{VICTIM} (port" in run_log and "exited with status 137" in run_log, run_log
