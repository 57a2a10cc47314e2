"""Issue #22 in a real browser: the Architecture view paints; a click on a box opens that layer in the
explorer; a click on a kernel opens its channel's map."""

from __future__ import annotations

import pytest

from conftest import ACTION_TIMEOUT_MS, FIRST_PAINT_TIMEOUT_MS, current_url

# The page is idle, and the graph's boxes (filled shapes: no image, no bars, so the shared
# wait_painted doesn't count it) and the kernels' picture are drawn.
_GRAPH_PAINTED_JS = """
(quiet) => {
  const idle = !document.querySelector('[data-testid="stStatusWidget"]')
    && !document.querySelector('[data-stale="true"]');
  const graph = document.querySelector('.st-key-graph-chart .js-plotly-plot');
  const kernels = document.querySelector('.st-key-kernel-chart .js-plotly-plot');
  const ok = idle && !!graph && graph.querySelectorAll('.scatterlayer .js-fill').length > 0
    && !!kernels && kernels.querySelectorAll('.imagelayer image').length > 0;
  const now = performance.now();
  if (!ok) { window.__graphSince = null; return false; }
  if (!window.__graphSince) window.__graphSince = now;
  return now - window.__graphSince >= quiet;  // idle and drawn for a while: no rerun under way
}
"""


def wait_url(app, part: str) -> None:
    """The page rewrites its URL in place (no navigation): wait until it holds ``part``."""
    app.page.wait_for_function("part => location.href.includes(part)", arg=part, timeout=ACTION_TIMEOUT_MS)


def open_graph(app) -> None:
    app.page.goto(f"{app.base_url}/?view=graph", wait_until="domcontentloaded")
    app.page.wait_for_function(_GRAPH_PAINTED_JS, arg=1500, timeout=FIRST_PAINT_TIMEOUT_MS, polling=100)


def click_trace_point(app, chart_key: str, trace_name: str, index: int) -> None:
    """A real mouse click on the ``index``-th point of the scatter trace called ``trace_name``."""
    chart = app.chart(chart_key)
    chart.first.scroll_into_view_if_needed()
    k = chart.evaluate(f"""gd => gd.data.filter(t => t.type === 'scatter' || t.type === undefined)
                                     .findIndex(t => t.name === '{trace_name}')""")
    assert k >= 0, f"no trace {trace_name} in {chart_key}"
    point = chart.locator(".scatterlayer .trace").nth(k).locator(".point").nth(index)
    box = point.bounding_box()
    assert box, f"point {index} of {trace_name} has no box"
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    app.page.mouse.move(x, y, steps=3)
    # Plotly picks what a click hit from the last hover, computed on a throttle: let it land first
    # (a person's pointer rests on a box longer than this before clicking).
    app.page.wait_for_timeout(300)
    app.page.mouse.click(x, y)


@pytest.mark.browser
def test_architecture_view_paints_and_a_click_opens_the_layer(app):
    page = app.page
    open_graph(app)
    app.wait_title("data flows down")
    app.assert_clean()
    app.screenshot("graph-view", anchor_key="graph-search")
    # the graph's boxes in forward order: the input, conv2d_1, its BN and activation, conv2d_2 ...
    names = app.chart("graph-chart").evaluate(
        "gd => gd.data.find(t => t.name === 'layers').customdata.map(d => d[1])")
    assert names[:5] == ["input_1", "conv2d_1", "batch_normalization_1", "activation_1", "conv2d_2"], names[:5]
    click_trace_point(app, "graph-chart", "layers", 4)
    wait_url(app, "view=explore")
    app.wait_painted(2)
    assert "layer=conv2d_2" in current_url(page), current_url(page)
    app.assert_clean()


@pytest.mark.browser
def test_a_click_on_a_kernel_opens_its_channel_map(app):
    page = app.page
    open_graph(app)
    app.chart("kernel-chart").first.scroll_into_view_if_needed()
    app.screenshot("graph-kernels", anchor_key="graph-kernel-layer")
    click_trace_point(app, "kernel-chart", "channels", 5)  # the trained conv2d_1's channel 5
    wait_url(app, "channel=5")  # the first conv layer opens in the compare view
    app.wait_painted(4)
    assert "view=" not in current_url(page) and "inspect=conv2d_1" in current_url(page), current_url(page)  # compare: the default view
    app.assert_clean()
