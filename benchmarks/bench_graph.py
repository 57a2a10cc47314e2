"""Architecture graph: layout time and payload per catalogue model (untrained weights: no download).

    python benchmarks/bench_graph.py [--rounds 3] [--models densenet121,resnet50]

Per model (built once, not timed), median of ``--rounds`` interleaved rounds:
  (g) ``vizlib.layer_graph``: nodes and edges from the traced model (the trace itself is cached per
      model object, as in the app, so this is the edge extraction);
  (l) ``graph_layout`` of the whole graph, and (lc) of the graph with its stages and blocks collapsed;
  (f) ``graph_figure`` from a graph and its layout, and (j) what ``st.plotly_chart`` does with it
      (``plotly.tools.return_figure_from_figure_or_data(fig, validate_figure=True)`` +
      ``plotly.io.to_json``), bytes = the payload;
  (c) the cached path of the page: the same figure object out of ``st.cache_resource``, through
      (j) again. (i) info: the same through a pickle round trip, as ``st.cache_data`` would return
      it (unpickling a Figure re-validates every property: why the page caches the object).
Paint (uncached) = g + l + f + j for the view the page opens on (stages and blocks collapsed from 120
layers);
target for DenseNet121 <= 2 s, and the cached path <= 0.2 s. Ratio c / paint in one run.
SVG and PNG exports are timed once per model (e).

``--browser``: the page itself in Chromium (``streamlit run app.py``, the Architecture view of
DenseNet121 untrained and of the bundled model), times taken inside the page with
``performance.now()`` until the graph's boxes are drawn and the page is idle: (b1) first load on a
cold server, (b2) a fresh session on the warm server, (b3) a click on "Draw" (a new layout:
DenseNet121 from its 27 stage boxes to every layer, 429; the bundled model to 11) and (b4) a click back
(layout and figure cached): click to repaint, the whole page's rerun included; (b5) from the depth
profile of the same session to the Architecture view (the graph drawn). The bundled model's
page is the baseline: the same page and controls around a small graph.
"""

from __future__ import annotations

import argparse
import gc
import pickle

import _common as C


def st_json(fig) -> str:
    """What st.plotly_chart does with a figure before it goes to the browser."""
    import plotly.io as pio
    import plotly.tools

    return pio.to_json(plotly.tools.return_figure_from_figure_or_data(fig, validate_figure=True), validate=False)


TARGET_PAINT_S = 2.0
TARGET_CACHED_S = 0.2
COLLAPSE_FROM = 120  # as ui/graph.py


def measure(name: str, rounds: int) -> dict:
    import vizlib
    from vizlib import graph as vg

    m = vizlib.load_model(name, weights=None if name != "emotion_cnn" else "imagenet")
    m.layers  # the trace, as the page has it before the view opens
    rows: dict[str, list[float]] = {k: [] for k in ("g", "l", "lc", "f", "j", "c", "i", "fx", "jx")}
    for _ in range(rounds):
        t, g = C.timed(lambda: vg.layer_graph(m))
        rows["g"].append(t)
        t, lay = C.timed(lambda: vg.graph_layout(g))
        rows["l"].append(t)
        c = vg.collapse(g, blocks=True, stages=True)
        t, lay_c = C.timed(lambda: vg.graph_layout(c))
        rows["lc"].append(t)
        shown, shown_lay = (c, lay_c) if len(g.nodes) >= COLLAPSE_FROM else (g, lay)
        t, fig = C.timed(lambda: vg.graph_figure(shown, layout=shown_lay, title=m.label))
        rows["f"].append(t)
        t, js = C.timed(lambda: st_json(fig))
        rows["j"].append(t)
        t, _ = C.timed(lambda: st_json(fig))
        rows["c"].append(t)
        blob = pickle.dumps(fig)
        t, _ = C.timed(lambda: st_json(pickle.loads(blob)))
        rows["i"].append(t)
        t, figx = C.timed(lambda: vg.graph_figure(g, layout=lay, title=m.label))  # everything expanded
        rows["fx"].append(t)
        t, jsx = C.timed(lambda: st_json(figx))
        rows["jx"].append(t)
    t_svg, svg = C.timed(lambda: vg.graph_svg(shown, layout=shown_lay, title=m.label))
    t_png, png = C.timed(lambda: vg.graph_png(shown, layout=shown_lay, title=m.label))
    med = {k: C.median(v) for k, v in rows.items()}
    paint = med["g"] + (med["lc"] if shown is c else med["l"]) + med["f"] + med["j"]
    out = {
        "model": name, "layers": len(g.nodes), "edges": len(g.edges), "blocks": len(g.blocks),
        "shown_nodes": len(shown.nodes), "median_s": med, "first_graph_s": rows["g"][0], "paint_s": paint, "cached_s": med["c"],
        "payload_bytes": len(js), "payload_expanded_bytes": len(jsx),
        "paint_expanded_s": med["g"] + med["l"] + med["fx"] + med["jx"],
        "svg_s": t_svg, "svg_bytes": len(svg), "png_s": t_png, "png_bytes": len(png),
    }
    del m
    import keras

    keras.backend.clear_session()
    gc.collect()
    return out


_PAINTED = """
() => {
  const idle = !document.querySelector('[data-testid="stStatusWidget"]')
    && !document.querySelector('[data-stale="true"]');
  const graph = document.querySelector('.st-key-graph-chart .js-plotly-plot');
  if (!idle || !graph || !graph.querySelectorAll('.scatterlayer .js-fill').length) return null;
  const title = (graph.querySelector('.gtitle') || {}).textContent || '';
  return [performance.now(), title];
}
"""


def browser_times(repeats: int) -> dict:
    """Navigation / a toggle click -> the graph drawn and the page idle, in Chromium, in ms."""
    from playwright.sync_api import sync_playwright

    from bench_browser import CHROMIUM, CHROMIUM_ARGS, Server, free_port

    port, floor_port = free_port(), free_port()
    C.OUT.mkdir(parents=True, exist_ok=True)
    server = Server(port, C.OUT / "bench_graph_server.log")
    floor = Server(floor_port, C.OUT / "bench_graph_floor.log", "benchmarks/graph_floor_app.py")
    server.wait_healthy()
    floor.wait_healthy()
    # (page, boxes as it opens, boxes after the toggle): DenseNet121 opens collapsed; the bundled model expanded.
    pages = {"densenet121": ("?model=densenet121&weights=untrained&view=graph", "27 boxes", "429 boxes",
                             "Every layer", "Stages"),
             "emotion_cnn": ("?view=graph", "46 boxes", "11 boxes", "Stages", "Every layer"),
             # The floor: the same radio-in-a-fragment swapping a cached one- or two-box figure.
             "floor": ("", "1 boxes", "2 boxes", "Every layer", "Stages")}
    out: dict = {name: {"load": [], "toggle": [], "toggle_back_cached": [], "switch": []} for name in pages}

    def wait(page, title_has: str) -> float:
        page.wait_for_function(f"""() => {{ const r = ({_PAINTED})(); return r && r[1].includes('{title_has}')
                                        ? r[0] : null; }}""", timeout=300_000, polling=50)
        return page.evaluate(f"({_PAINTED})()")[0]

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for _ in range(repeats + 1):
                for name, (query, opens, toggled, click, back) in pages.items():
                    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
                    page = ctx.new_page()
                    page.goto(f"http://localhost:{floor_port if name == 'floor' else port}/{query}",
                              wait_until="commit")
                    out[name]["load"].append(wait(page, opens))
                    detail = page.locator(".st-key-graph-detail")
                    for key, title, label in (("toggle", toggled, click), ("toggle_back_cached", opens, back)):
                        page.wait_for_timeout(1500)
                        t0 = page.evaluate("performance.now()")
                        detail.get_by_role("radio", name=label, exact=True).click()
                        out[name][key].append(wait(page, title) - t0)
                    if name == "floor":  # one page, no views
                        ctx.close()
                        continue
                    # (b5) from another view of the same session (the depth profile) to this one: the
                    # visitor's way to the graph once the page is open.
                    page.locator(".st-key-view").get_by_text("Depth profile", exact=True).click()
                    page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]")
                    page.wait_for_timeout(1500)
                    t0 = page.evaluate("performance.now()")
                    page.locator(".st-key-view").get_by_text("Architecture", exact=True).click()
                    out[name]["switch"].append(wait(page, opens) - t0)
                    ctx.close()
            browser.close()
    finally:
        server.stop()
        floor.stop()
    # The first round is cold on the server (model build, first layout): reported apart.
    return {name: {"cold_load_ms": r["load"][0], "load_ms": r["load"][1:], "toggle_ms": r["toggle"][1:],
                   "toggle_back_cached_ms": r["toggle_back_cached"][1:], "switch_from_depth_ms": r["switch"][1:]}
            for name, r in out.items()}


def main() -> None:
    import vizlib

    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default=",".join(["emotion_cnn", *vizlib.CATALOGUE]))
    ap.add_argument("--browser", action="store_true", help="only the page in Chromium (DenseNet121)")
    args = ap.parse_args()
    if args.browser:
        C.header("Architecture graph in Chromium: DenseNet121, navigation / click -> graph drawn, page idle")
        b = browser_times(args.rounds)
        for name, r in b.items():
            print(f"{name}: cold first load {r['cold_load_ms']:.0f} ms (model build included)")
            for key in ("load_ms", "toggle_ms", "toggle_back_cached_ms", "switch_from_depth_ms"):
                if not r[key]:
                    continue
                print(f"  {key:22} median {C.median(r[key]):6.0f} ms  {[round(x) for x in r[key]]}")
        d, e, f = b["densenet121"], b["emotion_cnn"], b["floor"]
        print("DenseNet121 / floor (a radio swapping a one-box chart), cached toggle back: "
              f"{C.median(d['toggle_back_cached_ms']) / C.median(f['toggle_back_cached_ms']):.2f}; the floor's "
              f"median {C.median(f['toggle_back_cached_ms']):.0f} ms is under every chart repaint on this page")
        print("DenseNet121 / bundled model, cached toggle back (the same page rerun, a 27- vs 46-box graph): "
              f"{C.median(d['toggle_back_cached_ms']) / C.median(e['toggle_back_cached_ms']):.2f}")
        C.save("graph_browser", b)
        return
    C.header("Architecture graph: layout time and payload per model")
    results = []
    print(f"{'model':16} {'nodes':>5} {'edges':>5} {'blocks':>6} {'shown':>5} {'graph':>7} {'layout':>7} "
          f"{'coll.':>7} {'figure':>7} {'json':>7} {'paint':>7} {'cached':>7} {'c/p':>5} {'payload':>9} "
          f"{'expanded':>9} {'exp.paint':>9} {'pickled':>7} {'svg':>6} {'png':>6}")
    for name in args.models.split(","):
        r = measure(name, args.rounds)
        results.append(r)
        med = r["median_s"]
        print(f"{name:16} {r['layers']:5d} {r['edges']:5d} {r['blocks']:6d} {r['shown_nodes']:5d} "
              f"{C.ms(med['g']):>7} {C.ms(med['l']):>7} {C.ms(med['lc']):>7} {C.ms(med['f']):>7} "
              f"{C.ms(med['j']):>7} {C.ms(r['paint_s']):>7} {C.ms(r['cached_s']):>7} "
              f"{r['cached_s'] / r['paint_s']:5.2f} {r['payload_bytes'] / 1024:7.0f}kB "
              f"{r['payload_expanded_bytes'] / 1024:7.0f}kB {C.ms(r['paint_expanded_s']):>9} {C.ms(med['i']):>7} "
              f"{C.ms(r['svg_s']):>6} {C.ms(r['png_s']):>6}", flush=True)
    dense = next((r for r in results if r["model"] == "densenet121"), None)
    if dense:
        print(f"\nDenseNet121: paint {dense['paint_s']:.2f} s (target <= {TARGET_PAINT_S} s: "
              f"{C.verdict(dense['paint_s'] <= TARGET_PAINT_S)}), everything expanded "
              f"{dense['paint_expanded_s']:.2f} s; cached {dense['cached_s']:.3f} s "
              f"(target <= {TARGET_CACHED_S} s: {C.verdict(dense['cached_s'] <= TARGET_CACHED_S)})")
    C.save("graph", {"results": results, "machine": C.machine_info(), "load": C.loadavg()})


if __name__ == "__main__":
    main()
