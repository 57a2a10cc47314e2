"""What is drawn must be right, measured in painted pixels in Chromium (issue #8).

* Colour bars: for every colormap the page offers, the bars of both grids and of
  the detail heatmap are sampled at the bottom, middle and top against the
  colormap's own stops (Python's Plotly). magma and inferno used to start light
  pink: Streamlit's frontend rewrites ``#000004`` (one of its template's
  placeholder colours) anywhere in a chart's JSON.
* Cell labels: readable on the darkest and the lightest cells of every colormap
  (local contrast of the label's pixels, on a test page with known cells).
* Titles: ConvNeXtTiny's and Xception's titles and a long layer name stay inside
  their charts, on a desktop and on a phone.
* The 4x4 detail heatmap is ticked at whole rows and columns.

Run: ``python -m pytest tests/browser -q -k colormaps``.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _harness():
    """tests/browser/conftest.py as a module (its helpers; the fixtures come from pytest as usual)."""
    spec = importlib.util.spec_from_file_location("_browser_harness", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


H = _harness()

COMPARE_CHARTS = 4  # predictions, first-layer grid, last-layer grid, detail heatmap
EXPLORE_CHARTS = 3  # predictions, layer grid, detail heatmap
#: Painted colour vs the colormap's own colour at that height, per RGB channel (antialiasing, rounding).
COLOUR_TOLERANCE = 10
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1400, "height": 1000}


def offered_colormaps(app) -> list[str]:
    """The options of the sidebar's Colormap selectbox, as the page lists them."""
    box = app.page.locator(".st-key-cmap input[role=combobox]")
    options = app.page.get_by_role("option")
    for attempt in range(4):  # a click that lands during a rerun may leave the list closed: open it again
        box.click() if attempt % 2 == 0 else box.press("ArrowDown")
        try:
            app.expect(options.first).to_be_visible(timeout=3_000)
            break
        except AssertionError:
            if attempt == 3:
                raise
    names = [t.strip() for t in options.all_text_contents()]
    app.page.keyboard.press("Escape")
    return names


def expected_rgb(cmap: str, fraction: float) -> np.ndarray:
    import plotly.colors as pc

    colour = pc.sample_colorscale(pc.get_colorscale(cmap), [min(1.0, max(0.0, fraction))], colortype="rgb")[0]
    return np.array([float(v) for v in pc.unlabel_rgb(colour)])


def element_pixels(locator) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(float)


@pytest.mark.browser
def test_colour_bars_paint_every_colormap(app):
    app.open()
    names = offered_colormaps(app)
    assert {"viridis", "magma", "inferno"} <= set(names), names
    failures = []
    for cmap in names:
        app.open(f"?cmap={cmap}", n_charts=COMPARE_CHARTS)
        app.page.mouse.move(2, 2)  # no hover label over a bar
        bars = {key: app.chart(key).locator(".colorbar .cbfill")
                for key in ("grid-first", "grid-last", "detail-conv2d_1")}
        for key, bar in bars.items():
            app.expect(bar).to_have_count(1)
            px = element_pixels(bar)
            h, w = px.shape[:2]
            assert h > 40 and w >= 6, f"{cmap} {key}: colour bar of {w}x{h} px"
            for where, y in (("bottom", h - 4), ("middle", h // 2), ("top", 3)):
                want = expected_rgb(cmap, 1.0 - (y + 0.5) / h)
                got = px[y, w // 2]
                if np.abs(got - want).max() > COLOUR_TOLERANCE:
                    failures.append(f"{cmap} {key} {where}: painted {got.astype(int).tolist()}, "
                                    f"colormap {want.astype(int).tolist()}")
    assert not failures, "\n".join(failures)
    app.assert_clean()


@pytest.mark.browser
def test_small_detail_heatmap_has_whole_number_ticks(app):
    app.open("?inspect=conv2d_7&channel=3&cmap=magma", n_charts=COMPARE_CHARTS)
    detail = app.chart("detail-conv2d_7")
    app.expect(detail.locator(".gtitle")).to_contain_text("conv2d_7")
    for axis in ("xtick", "ytick"):
        ticks = [t.strip() for t in detail.locator(f".{axis} text").all_text_contents()]
        assert ticks and all(re.fullmatch(r"\d+", t) for t in ticks), (axis, ticks)
        assert sorted(int(t) for t in ticks) == [0, 1, 2, 3], (axis, ticks)
    app.assert_clean()


# --------------------------------------------------------------------------- titles

# The charts vizlib.figures draws: channel grids, detail heatmaps, predictions.
_TITLE_BOXES_JS = """
() => [...document.querySelectorAll('[class*="st-key-grid-"] .js-plotly-plot, '
    + '[class*="st-key-detail-"] .js-plotly-plot, .st-key-predictions .js-plotly-plot')].map(p => {
  const t = p.querySelector('.gtitle'); const s = p.querySelector('.main-svg');
  if (!t || !s) return null;
  const tr = t.getBoundingClientRect(), sr = s.getBoundingClientRect();
  return {text: t.textContent, left: tr.left, right: tr.right, top: tr.top,
          svgLeft: sr.left, svgRight: sr.right, svgTop: sr.top};
}).filter(Boolean)
"""


def assert_titles_inside(app, where: str) -> list[str]:
    boxes = app.page.evaluate(_TITLE_BOXES_JS)
    assert boxes, f"{where}: no chart titles"
    cut = [f"{b['text']!r}: x {b['left']:.0f}-{b['right']:.0f}, top {b['top']:.0f}; chart: x "
           f"{b['svgLeft']:.0f}-{b['svgRight']:.0f}, top {b['svgTop']:.0f}"
           for b in boxes if b["right"] > b["svgRight"] + 0.5 or b["left"] < b["svgLeft"] - 0.5
           or b["top"] < b["svgTop"] - 0.5]
    assert not cut, f"{where}: titles cut off at the chart's edge:\n" + "\n".join(cut)
    return [b["text"] for b in boxes]


@pytest.mark.browser
@pytest.mark.parametrize("query, n_charts, must_show", [
    ("?model=xception&weights=untrained", COMPARE_CHARTS, "block14_sepconv"),
    ("?model=convnext_tiny&weights=untrained", COMPARE_CHARTS, "convnext_tiny_stem/convnext_tiny_stem_conv"),
    ("?model=convnext_tiny&weights=untrained&view=explore&layer=convnext_tiny_stage_3_block_2_pointwise_conv_2",
     EXPLORE_CHARTS, "convnext_tiny_stage_3_block_2_pointwise_conv_2"),
], ids=["xception", "convnext", "long-layer-name"])
def test_titles_fit_their_charts(app, query, n_charts, must_show):
    for viewport in (DESKTOP, PHONE):
        app.page.set_viewport_size(viewport)
        app.open(query, n_charts=n_charts)
        texts = assert_titles_inside(app, f"{viewport['width']}px")
        assert any(must_show in t for t in texts), texts  # the full name, only wrapped
    app.assert_clean()


# --------------------------------------------------------------------------- cell labels on a test page


@pytest.fixture(scope="module")
def figure_page(tmp_path_factory):
    """``streamlit run tests/browser/figure_page.py``: a channel grid with known cells."""
    port = H.free_port()
    log_path = tmp_path_factory.mktemp("figure_page") / "server.log"
    env = dict(os.environ, PYTHONPATH=str(H.ROOT), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "streamlit", "run", str(Path(__file__).with_name("figure_page.py")),
           "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
           "--browser.gatherUsageStats", "false"]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=H.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"figure page exited with {proc.returncode}:\n{H._tail(log_path)}", pytrace=False)
                try:
                    with opener.open(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"figure page not healthy:\n{H._tail(log_path)}", pytrace=False)
                time.sleep(0.25)  # polling the health endpoint
            yield f"http://127.0.0.1:{port}"
        finally:
            H._kill_group(proc)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    c = rgb / 255.0
    c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return c @ np.array([0.2126, 0.7152, 0.0722])


def label_legibility(shown: np.ndarray, hidden: np.ndarray) -> tuple[int, float]:
    """(label pixels, the share of them at WCAG contrast >= 4.5 with a neighbour).

    The label's pixels are those that change when the label is hidden; a pixel
    is legible when it differs from a pixel next to it at a contrast of 4.5:1
    or more (text fill against its outline, or outline against the cell). White
    text on a light cell has none.
    """
    changed = np.abs(shown - hidden).sum(axis=-1) > 30
    lum = _luminance(shown)
    pad = np.pad(lum, 1, mode="edge")
    h, w = lum.shape
    neigh = np.stack([pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    contrast = (neigh.max(axis=0) + 0.05) / (neigh.min(axis=0) + 0.05)
    n = int(changed.sum())
    return n, float((contrast[changed] >= 4.5).sum() / max(n, 1))


@pytest.mark.browser
def test_cell_labels_readable_on_every_colormap(browser, figure_page, playwright_api):
    from vizlib.figures import COLORMAPS

    context = browser.new_context(viewport=DESKTOP, device_scale_factor=1)
    try:
        page = context.new_page()
        watch = H.AppPage(page, figure_page, playwright_api.expect)  # collects console errors
        failures = []
        for cmap in COLORMAPS:
            page.goto(f"{figure_page}/?cmap={cmap}", wait_until="domcontentloaded")
            H.wait_painted(page, 1, timeout=H.FIRST_PAINT_TIMEOUT_MS)
            grid = page.locator(".st-key-labels-grid .js-plotly-plot")
            texts = grid.locator(".scatterlayer .textpoint text")
            playwright_api.expect(texts).to_have_count(9)
            page.mouse.move(2, 2)
            boxes = [texts.nth(i).bounding_box() for i in range(9)]
            clip = grid.bounding_box()
            shown = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB")).astype(float)
            grid.evaluate("p => p.querySelectorAll('.textpoint').forEach(e => e.style.visibility = 'hidden')")
            page.wait_for_function("() => [...document.querySelectorAll('.textpoint')]"
                                   ".every(e => getComputedStyle(e).visibility === 'hidden')")
            hidden = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB")).astype(float)
            for i, box in enumerate(boxes):
                x0, y0 = int(box["x"] - clip["x"]) - 3, int(box["y"] - clip["y"]) - 3
                x1, y1 = x0 + int(box["width"]) + 7, y0 + int(box["height"]) + 7
                n, share = label_legibility(shown[y0:y1, x0:x1], hidden[y0:y1, x0:x1])
                if n < 40 or share < 0.5:
                    failures.append(f"{cmap} cell {i} (value {i / 8:.2f}): {n} label pixels, "
                                    f"{share:.0%} of them at contrast >= 4.5")
        assert not failures, "labels hard to read:\n" + "\n".join(failures)
        watch.assert_quiet()
    finally:
        context.close()
