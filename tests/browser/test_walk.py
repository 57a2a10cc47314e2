"""Issue #17: a view that broke never stays broken, and no widget value from another model misleads it.

AppTest can't see this class of defect: a browser sends a selectbox's value back
as its *label*, and when the options change between runs (another model, another
image) the label names nothing the new options contain. Only a real browser
produces that, so these tests drive Chromium.

* Named regressions: each defect found by hand or by the walk, replayed step by step.
* The walk: fixed-seed random actions over every sidebar and view control, the
  bundled model and three untrained catalogue models, samples and an upload; after
  every step the page must not say it broke, show no exception, and what it names
  must agree (class in the picker = class explained = highlighted bar).
  A failure saves a screenshot and the seed's step list under test-artifacts/failures/.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from titles import named_in_title

ACTION_TIMEOUT_MS = 60_000
BUILD_TIMEOUT_MS = 180_000  # an untrained catalogue model is built the first time it is picked
BROKE = "Something went wrong"
FAILURES = Path(__file__).resolve().parents[2] / "test-artifacts" / "failures"


_MEDIA_RACE = re.compile(r"(status of 404 .*|Image source error - )http://127\.0\.0\.1:\d+/media/[0-9a-f]+\.(jpg|png)")


def main_text(app) -> str:
    return app.page.locator('[data-testid="stMain"]').inner_text()


def assert_not_broken(app, where: str = "") -> None:
    """No view says it broke, no exception element, nothing in the console."""
    text = main_text(app)
    assert BROKE not in text, f"{where}: the page says it broke"
    for testid in ("stException",):
        found = app.page.locator(f'[data-testid="{testid}"]')
        assert found.count() == 0, f"{where}: {testid} on the page: {found.all_inner_texts()}"
    assert "Traceback" not in text, f"{where}: a traceback on the page"
    # A rerun that starts while the browser still fetches the last run's image makes Streamlit drop
    # that media file first (a 404 for an image already replaced): the walk's pace, not a page defect.
    app.errors[:] = [e for e in app.errors if not _MEDIA_RACE.search(e)]
    app.assert_quiet()


def picked(app, key: str) -> str:
    """The label a selectbox shows."""
    return app.page.locator(f".st-key-{key} input[role=combobox]").input_value()


# The script is idle (no running indicator, no stale element) and the page unchanged for `quiet` ms.
# Unlike conftest's wait_painted, charts of any kind count (a line chart has no image or bar).
_SETTLED_JS = """
([quiet]) => {
  const ok = !document.querySelector('[data-testid="stStatusWidget"]')
    && !document.querySelector('[data-stale="true"]');
  const main = document.querySelector('[data-testid="stMain"]');
  const sig = ok && main ? main.querySelectorAll('*').length + '|' + [...document.querySelectorAll(
      '.js-plotly-plot .gtitle')].map(t => t.textContent).join('|') : null;
  const now = performance.now();
  if (!ok || window.__walkSig !== sig) { window.__walkSig = sig; window.__walkSince = now; return false; }
  return now - window.__walkSince >= quiet;
}
"""


def settle(app, timeout: float = ACTION_TIMEOUT_MS, quiet_ms: int = 500) -> None:
    app.page.wait_for_function(_SETTLED_JS, arg=[quiet_ms], timeout=timeout, polling=100)


@pytest.mark.browser
def test_model_then_image_change_in_why_view_never_breaks(app):
    """The reported steps: VGG16 untrained on the astronaut's face, Why view; ResNet50; then the cat."""
    app.open("?model=vgg16&weights=untrained&image=astronaut_face&view=why", n_charts=3)
    assert_not_broken(app, "opened")
    app.select("model", "ResNet50")
    settle(app, BUILD_TIMEOUT_MS)
    app.wait_painted(3, timeout=BUILD_TIMEOUT_MS)
    assert_not_broken(app, "after ResNet50")
    explained = app.page.locator(".st-key-cam .gtitle").text_content()
    label = picked(app, "cls")
    assert label.startswith("the top prediction: "), label
    assert label.removeprefix("the top prediction: ") in explained, (label, explained)
    app.select("image", "cat", typed="cat", exact=False)
    settle(app, BUILD_TIMEOUT_MS)
    app.wait_painted(3, timeout=BUILD_TIMEOUT_MS)
    assert_not_broken(app, "after the cat")
    explained = app.page.locator(".st-key-cam .gtitle").text_content()
    label = picked(app, "cls")
    assert label.removeprefix("the top prediction: ") in explained, (label, explained)


# --------------------------------------------------------------------------- what the page names


_NAMES_JS = """
() => {
  const text = (sel) => { const e = document.querySelector(sel); return e ? e.textContent : null; };
  const value = (sel) => { const e = document.querySelector(sel); return e ? e.value : null; };
  // The highlighted prediction bar: the one drawn in the full colour while the others are dimmed.
  let highlighted = null, bars = 0;
  const chart = document.querySelector('.st-key-predictions .js-plotly-plot');
  if (chart) {
    const paths = [...chart.querySelectorAll('.barlayer .point path')];
    bars = paths.length;
    // Lit: the full colour at full opacity (a dimmed bar is lighter, or faded by Plotly's selection).
    const lit = paths.map(p => {
      const st = getComputedStyle(p);
      return st.fill === 'rgb(76, 120, 168)' && parseFloat(st.opacity) * parseFloat(st.fillOpacity) > 0.99;
    });
    if (lit.filter(x => x).length === 1 && paths.length > 1) {
      const box = paths[lit.indexOf(true)].getBoundingClientRect();
      const y = box.top + box.height / 2;
      const ticks = [...chart.querySelectorAll('.yaxislayer-above .ytick text')];
      let best = null, dist = 1e9;
      for (const t of ticks) {
        const r = t.getBoundingClientRect();
        const d = Math.abs(r.top + r.height / 2 - y);
        if (d < dist) { dist = d; best = t.textContent; }
      }
      highlighted = best;
    }
    var labels = [...chart.querySelectorAll('.yaxislayer-above .ytick text')].map(t => t.textContent);
  }
  return {
    cls: value('.st-key-cls input[role=combobox]'),
    cam: text('.st-key-cam .gtitle') || text('.st-key-cam-pair .gtitle'),
    highlighted, bars, labels: labels || [],
    channel: value('.st-key-channel input'),
    details: [...document.querySelectorAll('[class*="st-key-detail-"] .gtitle')].map(t => t.textContent),
    caption: text('[data-testid="stMain"] [data-testid="stImageCaption"]'),
    inspect: value('.st-key-inspect input[role=combobox]'),
    layer: value('.st-key-layer input[role=combobox]'),
  };
}
"""


def class_in_picker(label: str) -> str:
    """The class name a "Explain the class" label names."""
    if label.startswith("the top prediction: "):
        return label.removeprefix("the top prediction: ")
    return re.sub(r" \([^()]*%\)$", "", label)


def assert_names_agree(app, where: str, upload_name: str = "") -> None:
    """What the page names agrees: class picked = class explained = highlighted bar; channel; layer; link."""
    from urllib.parse import parse_qs, urlparse

    n = app.page.evaluate(_NAMES_JS)
    q = parse_qs(urlparse(app.url).query)
    if n["cls"] is not None and n["cam"] is not None:
        name = class_in_picker(n["cls"])
        cam = re.sub(r"\s+", " ", n["cam"])
        assert name and named_in_title(name, cam), f"{where}: picker {n['cls']!r} but the map explains {cam!r}"
        if name in n["labels"]:
            assert n["highlighted"] == name, f"{where}: explaining {name!r}, bar highlighted: {n['highlighted']!r}"
        else:
            assert n["highlighted"] is None, f"{where}: {name!r} not in the top 5 yet {n['highlighted']!r} is lit"
    elif n["bars"] > 1:
        assert n["highlighted"] is None, f"{where}: a bar is highlighted outside the Why view: {n['highlighted']!r}"
    if n["channel"] is not None and n["details"]:
        assert any(f", channel {n['channel']}" in t for t in n["details"]), \
            f"{where}: channel input {n['channel']} but detail {n['details']}"
        if q.get("view", ["compare"])[0] in ("compare", "explore"):
            assert q.get("channel", [n["channel"]]) == [n["channel"]], \
                f"{where}: the link says channel={q.get('channel')} while channel {n['channel']} is shown"
    if n["inspect"] is not None and q.get("view", ["compare"]) == ["compare"]:
        layer = n["inspect"].split(": ", 1)[-1]
        assert q.get("inspect", [layer]) == [layer] or "inspect" not in q, \
            f"{where}: the link says inspect={q.get('inspect')} while {layer} is inspected"
    if n["layer"] is not None and "layer" in q:
        assert n["layer"].split(" ")[1] == q["layer"][0], \
            f"{where}: the link says layer={q['layer']} while {n['layer']!r} is shown"
    if upload_name and n["caption"] and n["caption"].startswith(upload_name):
        assert "image" not in q, f"{where}: an upload is shown but the link says image={q['image']}"


def settled_names_agree(app, where: str, upload_name: str = "", patience_s: float = 15.0) -> None:
    """:func:`assert_names_agree` once the page has settled: the browser paints a run's elements as
    they arrive, and on a loaded machine a check can fall between two of them. A disagreement
    that lasts ``patience_s`` is real."""
    import time

    deadline = time.monotonic() + patience_s
    while True:
        try:
            assert_names_agree(app, where, upload_name)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        app.page.wait_for_timeout(300)
        settle(app)


# --------------------------------------------------------------------------- the walk

MODELS = ("Facial expression CNN (bundled)", "VGG16", "ResNet50", "MobileNetV2")
SAMPLE_NAMES = ("astronaut_face", "cat", "horse", "coffee", "brick", "rocket")
VIEWS = ("First vs last conv layer", "Layer explorer", "One channel across images", "Why this prediction?",
         "Depth profile", "Dataset atlas")
#: Presenter mode's step buttons (layer, channel, class), as the keyboard presses them.
STEP_BUTTONS = ", ".join(f".st-key-live_{k}_{d} button" for k in ("layer", "ch", "cls") for d in ("prev", "next"))
#: Actions on the sidebar: not applicable while presenter mode has put it away.
SIDEBAR_ACTIONS = {"model", "weights imagenet", "weights untrained", "sample", "source samples", "upload",
                   "mode", "grid size", "scale", "cmap", "featvis"}
GRIDS = ("grid-first", "grid-last", "grid-explore", "grid-why", "contributions", "predictions")


class DomMoved(Exception):
    """A control seen a moment ago was gone when the walk used it: the action had no effect."""


class Walk:
    """One fixed-seed walk: random applicable actions, each followed by the checks."""

    def __init__(self, app, seed: int, upload_path: str, server=None):
        import random

        self.server = server
        self.app, self.page, self.seed = app, app.page, seed
        self.rng = random.Random(seed)
        self.upload_path = upload_path
        self.upload_name = upload_path.rsplit("/", 1)[-1]
        self.steps: list[str] = []

    # ---- helpers

    def has(self, selector: str) -> bool:
        return self.page.locator(selector).count() > 0

    def index(self, count: int, what: str) -> int:
        """A random index below ``count``; none when the page reran between seeing a control and using it."""
        if count <= 0:
            raise DomMoved(f"{what} vanished (the page reran)")
        return self.rng.randrange(count)

    def pick_option(self, key: str) -> str:
        """Open selectbox ``key`` and click one of its visible options at random."""
        box = self.page.locator(f".st-key-{key} input[role=combobox]").first
        box.scroll_into_view_if_needed()
        box.click()
        options = self.page.get_by_role("option")
        try:
            options.first.wait_for(state="visible", timeout=3_000)
        except Exception:  # noqa: BLE001 - a freshly painted combobox sometimes ignores its first click
            box.click()
            options.first.wait_for(state="visible", timeout=5_000)
        option = options.nth(self.index(min(options.count(), 12), "the options"))
        text = option.inner_text()
        option.click()
        return text

    def click_point(self, chart_key: str, selector: str) -> str:
        points = self.app.chart(chart_key).locator(selector)
        count = points.count()
        if not count:
            return "nothing to click"
        i = self.rng.randrange(count)
        point = points.nth(i)
        point.scroll_into_view_if_needed()
        box = point.bounding_box()
        if not box:
            return "not on screen"
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        self.page.mouse.move(x, y, steps=2)
        self.page.mouse.click(x, y)
        return f"point {i}"

    # ---- actions: (name, applicable?, do) -> description

    def actions(self):
        h = self.has
        return [
            ("model", lambda: True, lambda: self.app.select("model", self.rng.choice(MODELS)) or ""),
            ("weights imagenet", lambda: h(".st-key-weights"), lambda: self.app.radio("weights", "ImageNet (pretrained)")),
            ("weights untrained", lambda: h(".st-key-weights"), lambda: self.app.radio("weights", "untrained (random)")),
            ("sample", lambda: h(".st-key-image input"), self.sample),
            ("source samples", lambda: True, lambda: self.app.radio("source", "Samples")),
            ("upload", lambda: True, self.upload),
            ("view", lambda: h(".st-key-view"), self.view),
            ("class", lambda: h(".st-key-cls input"), lambda: self.pick_option("cls")),
            ("camlayer", lambda: h(".st-key-camlayer input"), lambda: self.pick_option("camlayer")),
            ("layer", lambda: h(".st-key-layer input"), lambda: self.pick_option("layer")),
            ("inspect", lambda: h(".st-key-inspect input"), lambda: self.pick_option("inspect")),
            ("channel", lambda: h(".st-key-channel input"), self.channel),
            ("cell click", lambda: any(h(f".st-key-{g} .scatterlayer .point") for g in GRIDS[:4]), self.grid_click),
            ("bar click", lambda: h(".st-key-predictions .barlayer .point"),
             lambda: self.click_point("predictions", ".barlayer .point")),
            ("contribution click", lambda: h(".st-key-contributions .barlayer .point"),
             lambda: self.click_point("contributions", ".barlayer .point")),
            ("detail click", lambda: h('[class*="st-key-detail-"] .nsewdrag'), self.detail_click),
            ("depth click", lambda: h(".st-key-depth-profile .js-plotly-plot"), self.depth_click),
            ("cell panel", lambda: h('[class*="st-key-cell-panel-"] summary'), self.cell_panel),
            ("mode", lambda: h(".st-key-mode button:not([disabled])"),
             lambda: self.app.segmented("mode", self.rng.choice(["First N", "Most active N", "Most contributing N"]))),
            ("grid size", lambda: h(".st-key-n [role=slider]"), self.grid_size),
            ("scale", lambda: h(".st-key-scale input:not([disabled])"),
             lambda: self.app.radio("scale", self.rng.choice(["shared", "per channel"]))),
            ("cmap", lambda: h(".st-key-cmap input"), lambda: self.pick_option("cmap")),
            ("opacity", lambda: h(".st-key-opacity [role=slider]"), self.opacity),
            ("twin", lambda: h(".st-key-twin_on"), lambda: self.page.locator(".st-key-twin_on label").first.click()),
            # Feature visualisations run in the background; only for the bundled model (seconds, not minutes).
            ("featvis", lambda: h(".st-key-fv_on") and "emotion_cnn" in self.app.url,
             lambda: self.page.locator(".st-key-fv_on label").first.click()),
            # The live view's own controls (the stream itself is the live tests' business: a WebRTC stream
            # in a walk would only slow every other step).
            ("live layer", lambda: h(".st-key-live_layer input"), lambda: self.pick_option("live_layer")),
            ("live grad-cam", lambda: h(".st-key-live_cam"),
             lambda: self.page.locator(".st-key-live_cam label").first.click()),
            ("presenter", lambda: h(".st-key-live_presenter"),
             lambda: self.page.locator(".st-key-live_presenter label").first.click()),
            ("live step", lambda: h(STEP_BUTTONS), self.live_step),
        ]

    def view(self) -> str:
        names = self.page.locator(".st-key-view [role=radio]").all_inner_texts() or list(VIEWS)
        name = self.rng.choice(names)
        self.app.segmented("view", name)
        return name

    def live_step(self) -> str:
        """Press one of presenter mode's step buttons (layer, channel, class)."""
        buttons = self.page.locator(STEP_BUTTONS)
        button = buttons.nth(self.index(buttons.count(), "the step buttons"))
        label = button.inner_text()
        button.click()
        return label

    def sample(self) -> str:
        from vizlib.images import SAMPLES

        name = self.rng.choice(SAMPLE_NAMES)
        self.app.select("image", f"{name} — {SAMPLES[name].title}", typed=name, exact=True)
        return name

    def upload(self) -> str:
        self.app.radio("source", "Upload")
        file_input = self.page.locator('.st-key-image_files input[type="file"]')
        file_input.wait_for(state="attached")
        settle(self.app)
        file_input.set_input_files(self.upload_path)
        return self.upload_name

    def channel(self) -> str:
        """Type a channel, or step it with the input's -/+ buttons (they stop at the layer's range)."""
        box = self.page.locator(".st-key-channel input").first
        if self.rng.random() < 0.5:
            value = str(self.rng.randrange(0, 3))  # every layer with maps here has >= 3 channels
            box.fill(value)
            box.press("Enter")
            return value
        buttons = self.page.locator(".st-key-channel button")
        which = self.index(buttons.count(), "the channel's buttons")
        button = buttons.nth(which)
        if button.is_disabled():
            return "at the end of the range"
        button.click()
        return ("-", "+")[which] if buttons.count() == 2 else f"button {which}"

    def grid_click(self) -> str:
        keys = [g for g in GRIDS[:4] if self.has(f".st-key-{g} .scatterlayer .point")]
        key = keys[self.index(len(keys), "the grids")]
        return f"{key} " + self.click_point(key, ".scatterlayer .point")

    def detail_click(self) -> str:
        area = self.page.locator('[class*="st-key-detail-"] .nsewdrag').first
        area.scroll_into_view_if_needed()
        box = area.bounding_box()
        if not box:
            return "not on screen"
        fx, fy = self.rng.uniform(0.1, 0.9), self.rng.uniform(0.1, 0.9)
        self.page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy, steps=2)
        self.page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
        return f"{fx:.2f},{fy:.2f}"

    def depth_click(self) -> str:
        return self.click_point("depth-profile", ".scatterlayer .point")

    def cell_panel(self) -> str:
        summary = self.page.locator('[class*="st-key-cell-panel-"] summary').first
        summary.scroll_into_view_if_needed()
        summary.click()
        settle(self.app)
        rows = self.page.locator('[class*="st-key-cell-row-"] input')
        if rows.count() and self.rng.random() < 0.7:
            value = str(self.rng.randrange(0, 80))
            rows.first.fill(value)
            rows.first.press("Enter")
            return f"row {value}"
        return "toggled"

    def slider(self, key: str) -> str:
        handle = self.page.locator(f".st-key-{key} [role=slider]").first
        handle.scroll_into_view_if_needed()
        handle.focus()
        key_name = self.rng.choice(["ArrowLeft", "ArrowRight", "PageUp", "PageDown", "Home", "End"])
        handle.press(key_name)
        return key_name

    def grid_size(self) -> str:
        return self.slider("n")

    def opacity(self) -> str:
        return self.slider("opacity")

    # ---- the walk

    def run(self, n_steps: int) -> None:
        actions = self.actions()
        self.page.set_default_timeout(10_000)  # an action that can't happen fails fast (and counts as no effect)
        try:
            for step in range(n_steps):
                sidebar = self.page.locator('[data-testid="stSidebar"]').first.is_visible()
                applicable = [a for a in actions if (sidebar or a[0] not in SIDEBAR_ACTIONS) and a[1]()]
                name, _, do = self.rng.choice(applicable)
                self.steps.append(f"{step}: {name}")
                try:
                    what = do()
                except Exception as exc:  # noqa: BLE001 - the DOM moved under the mouse (a rerun, a
                    # chart repainting): the action had no effect; the checks below still run
                    if type(exc).__module__.split(".")[0] != "playwright" and not isinstance(exc, DomMoved):
                        raise
                    what = "no effect: " + str(exc).splitlines()[0][:80]
                if what:
                    self.steps[-1] += f" ({what})"
                settle(self.app, BUILD_TIMEOUT_MS)
                where = f"seed {self.seed}, " + self.steps[-1]
                assert_not_broken(self.app, where)
                self.app.assert_no_error_elements()
                settled_names_agree(self.app, where, self.upload_name)
            if os.environ.get("WALK_LOG"):  # the steps taken, for whoever wants to see what a seed covers
                print(f"\nwalk seed {self.seed}:\n" + "\n".join(self.steps))
        except BaseException:
            self.save_failure()
            raise

    def save_failure(self) -> None:
        FAILURES.mkdir(parents=True, exist_ok=True)
        stem = FAILURES / f"walk-seed{self.seed}-step{len(self.steps) - 1}"
        try:
            self.page.screenshot(path=str(stem.with_suffix(".png")), full_page=True)
        except Exception:  # noqa: BLE001 - best effort
            pass
        log = self.server.log_tail(80) if self.server is not None else ""
        stem.with_suffix(".txt").write_text(f"seed {self.seed}\n" + "\n".join(self.steps)
                                            + "\n\nserver log (tail):\n" + log + "\n")
        print(f"walk failed: seed {self.seed}; steps in {stem.with_suffix('.txt')}")
        print("\n".join(self.steps[-15:]))


WALK_SEEDS = (17, 1717, 171717)
WALK_STEPS = int(os.environ.get("WALK_STEPS", "100"))  # per seed: >= 300 actions in all


@pytest.fixture
def upload_png(tmp_path):
    from PIL import Image

    path = tmp_path / "walk-upload.png"
    Image.linear_gradient("L").resize((120, 90)).convert("RGB").save(path, format="PNG")
    return str(path)


@pytest.mark.browser
@pytest.mark.parametrize("seed", WALK_SEEDS)
def test_random_walk_never_breaks_the_page(app, server, seed, upload_png):
    """Fixed-seed random actions over every control; after each: not broken, names agree."""
    app.open(n_charts=4)
    Walk(app, seed, upload_png, server).run(WALK_STEPS)


@pytest.mark.browser
def test_random_walk_from_the_live_view(app, server, upload_png):
    """A shorter walk that starts in the Live camera view: whether a long walk reaches it depends on its seed
    (and on timing: an action applies only when its control is there), so this one always does."""
    app.open("?view=live", n_charts=1)
    app.page.locator(".st-key-live_presenter").first.wait_for(timeout=BUILD_TIMEOUT_MS)
    walk = Walk(app, 4242, upload_png, server)
    walk.run(int(os.environ.get("WALK_STEPS_LIVE", "40")))
    assert any(s.split(": ", 1)[1].startswith(("live", "presenter")) for s in walk.steps), walk.steps


# --------------------------------------------------------------------------- part 2: state that must agree


def bar_point(app, label: str):
    """The bar of the top-5 chart whose axis label is ``label`` (bars are drawn bottom-up)."""
    labels = app.chart("predictions").locator(".yaxislayer-above .ytick text").evaluate_all(
        "els => els.map(e => [e.getBoundingClientRect().top, e.textContent]).sort((a, b) => b[0] - a[0])"
        ".map(x => x[1])")
    return app.chart("predictions").locator(".barlayer .point").nth(labels.index(label))


@pytest.mark.browser
def test_top5_highlight_follows_the_class_picked(app):
    """Click a bar, then pick "surprise" in the picker: the highlighted bar is "surprise", not the clicked one.

    (The issue clicked "angry"; its bar is 0.75 % wide, too thin for a reliable click here, so this
    clicks the "happy" bar: the defect, Plotly's selection outliving the picker, is the same.)"""
    app.open()
    bar = bar_point(app, "happy")
    bar.scroll_into_view_if_needed()
    box = bar.bounding_box()
    assert box
    app.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=3)
    app.page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    app.wait_title("Where the model looked for", "happy")
    settle(app)
    settled_names_agree(app, "after the happy bar")
    assert app.page.evaluate(_NAMES_JS)["highlighted"] == "happy"
    app.select("cls", "surprise", exact=False)
    app.wait_title("Where the model looked for", "surprise")
    settle(app)
    settled_names_agree(app, "after picking surprise")
    assert app.page.evaluate(_NAMES_JS)["highlighted"] == "surprise"
    assert_not_broken(app)


@pytest.mark.browser
def test_link_after_a_model_switch_names_no_layer_of_the_previous_model(app):
    """inspect=conv2d_7 (the bundled model's) must leave the link when VGG16 is shown."""
    from urllib.parse import parse_qs, urlparse

    app.open("?inspect=conv2d_7")
    app.select("model", "VGG16")
    settle(app, BUILD_TIMEOUT_MS)
    app.wait_painted(0, timeout=BUILD_TIMEOUT_MS)
    app.page.wait_for_function("() => !/[?&]model=emotion_cnn/.test(location.search)")
    q = parse_qs(urlparse(app.url).query)
    assert q.get("model") == ["vgg16"], q
    assert q.get("inspect", [""])[0] in ("", "block1_conv1", "block5_conv3"), q


@pytest.mark.browser
def test_link_after_an_upload_names_no_sample_image(app, upload_png):
    from urllib.parse import parse_qs, urlparse

    app.open("?image=astronaut_face")
    app.radio("source", "Upload")
    file_input = app.page.locator('.st-key-image_files input[type="file"]')
    file_input.wait_for(state="attached")
    settle(app)
    file_input.set_input_files(upload_png)
    app.expect(app.page.locator('[data-testid="stMain"] [data-testid="stImageCaption"]').first).to_contain_text(
        "walk-upload.png")
    settle(app)
    app.page.wait_for_function("() => /[?&]source=upload/.test(location.search)")
    q = parse_qs(urlparse(app.url).query)
    assert "image" not in q, q
    assert_not_broken(app)


@pytest.mark.browser
def test_imagenet_weights_offline_fall_back_to_untrained_with_a_notice(app):
    """The server is offline (conftest): VGG16's ImageNet weights can't be had, so untrained is shown."""
    expect = app.expect
    app.open()
    app.select("model", "VGG16")
    app.wait_title("block5_conv3", "14×14×512", timeout=BUILD_TIMEOUT_MS)
    app.wait_painted(4, timeout=BUILD_TIMEOUT_MS)
    expect(app.page.locator(".st-key-weights").get_by_role("radio", name="untrained (random)")).to_be_checked()
    notice = app.page.locator('[data-testid="stMain"] [data-testid="stAlertContentWarning"]')
    expect(notice).to_contain_text("untrained (random) weights")
    expect(app.page.locator('[data-testid="stAlertContentError"]')).to_have_count(0)
    assert "/" not in notice.inner_text().replace("(random)", ""), notice.inner_text()  # no server path
    assert "weights=untrained" in app.url
    assert_not_broken(app)


@pytest.mark.browser
def test_leaving_the_live_view_in_presenter_mode_gives_the_sidebar_back(app):
    """Presenter mode hides the sidebar for projection. It used to stay hidden after the visitor left the
    live view with it on: no model, image or display control anywhere, until a reload."""
    expect = app.expect
    app.open("?view=live", n_charts=1)
    sidebar = app.page.locator('[data-testid="stSidebar"]')
    toggle = app.page.locator(".st-key-live_presenter label").first
    toggle.wait_for(timeout=BUILD_TIMEOUT_MS)
    expect(sidebar).to_be_visible()
    toggle.click()
    expect(sidebar).to_be_hidden()
    app.segmented("view", "Layer explorer")
    app.wait_url("view=explore")
    settle(app)
    expect(sidebar).to_be_visible()
    expect(app.page.locator(".st-key-model")).to_be_visible()
    assert_not_broken(app)
    # Back in the live view, presenter mode is as the visitor left it: on, the sidebar away.
    app.segmented("view", "Live camera")
    app.wait_url("view=live")
    expect(app.page.locator(".st-key-live_presenter input").first).to_be_checked()
    expect(sidebar).to_be_hidden()
