"""Bytes the browser receives for the first-vs-last view, and the time to build the figures.

    python benchmarks/bench_payload.py [--repeats 7] [--no-apptest]

Two views, at the app's defaults (first 49 channels, shared scale, viridis,
channel 0 of the first conv layer inspected):

  default: the bundled model (``load_bundled_model()``), sample ``astronaut_face``
  vgg16:   VGG16 untrained (``load_catalogue_model("vgg16", None)``), sample ``cat``

The figures are built as app.py builds them (``compute`` -> ``forward`` with
first + last conv and predictions; ``channel_grid`` for both layers with
``pick_channels(.., 49, "first")``, the app's titles, highlight and labels;
``channel_detail`` of channel 0 of the first layer; ``prediction_bars`` of
``decode(.., top=5)``) and serialised the way Streamlit does it
(streamlit/elements/plotly_chart.py: ``plotly.tools.return_figure_from_figure_or_data(
fig, validate_figure=True)`` = ``fig.to_dict()``, then ``plotly.io.to_json(figure,
validate=False)``; that string is the ``spec`` field of the PlotlyChart protobuf).
``len(fig.to_json())`` is printed alongside.

Cross-check (skip with --no-apptest): the real app is run headless with
``streamlit.testing.v1.AppTest`` at the same URL parameters, and the ``spec``
strings of the PlotlyChart protos it produced are measured, plus the protobuf
size of every element on the page (what the script's deltas carry; the
``st.image`` pictures travel separately over HTTP as media files and are not in
it). The bytes actually received over the websocket are measured in a real
browser by bench_browser.py.

Untrained VGG16 weights are random, and the PNG mosaics compress differently
for different weights (the first-layer grid varies by ~30%), so the VGG16 view
is measured for several seeds (``keras.utils.set_random_seed(s)`` before the
build, --seeds, default 5): the verdict uses the largest. Timings and the
AppTest cross-check use seed 0 (AppTest seeds the same way before its run, so
replica and real app build identical weights).

Target: <= 1.5 MB per view (all figures of the view together).
"""

from __future__ import annotations

import argparse

import _common as C

TARGET_BYTES = 1.5e6  # 1.5 MB (decimal)
VIEWS = {
    "default": {"model": "emotion_cnn", "image": "astronaut_face", "query": {}},
    "vgg16": {"model": "vgg16", "image": "cat", "query": {"model": "vgg16", "weights": "untrained", "image": "cat"}},
}


def grid_title(info, role: str) -> str:  # as app.grid_title
    shape = "×".join(str(d) for d in info.output_shape)
    return f"{role}<b>{info.name}</b> · layer #{info.index} · {info.kind} · {shape}"


def streamlit_spec(fig) -> str:
    """What st.plotly_chart puts in PlotlyChartProto.spec."""
    import plotly.io
    import plotly.tools

    figure = plotly.tools.return_figure_from_figure_or_data(fig, validate_figure=True)
    return plotly.io.to_json(figure, validate=False)


def build_view(m, image, acts, output) -> dict:
    """The four figures of the compare view, exactly as app.py builds them at its defaults."""
    from vizlib.extract import decode, pick_channels
    from vizlib.figures import channel_detail, channel_grid, prediction_bars
    from vizlib.layers import conv_layers
    from vizlib.models import BUNDLED_NAME

    n, mode, scale, cmap, channel = 49, "first", "shared", "viridis", 0
    first, last = conv_layers(m)[0], conv_layers(m)[-1]
    figs = {}
    top = decode(m, output, top=5)[0]
    title = "Top-5 predictions" + (" — untrained: random, for comparison" if m.untrained else "")
    figs["predictions"] = prediction_bars(top, title=title)
    labels = m.class_names if (m.key == BUNDLED_NAME and m.class_names
                               and last.channels == len(m.class_names)) else None
    for key, info, role, highlight, lab in (("grid-first", first, "First conv layer: ", channel, None),
                                            ("grid-last", last, "Last conv layer: ", None, labels)):
        maps = acts[info.name][0]
        chosen = pick_channels(maps, n, mode)
        figs[key] = channel_grid(maps, chosen, colormap=cmap, scale=scale, title=grid_title(info, role),
                                 highlight=highlight, labels=lab)
    maps = acts[first.name][0]
    title = f"<b>{first.name}</b>, channel {channel} · {first.output_shape[0]}×{first.output_shape[1]}"
    figs[f"detail-{first.name}"] = channel_detail(maps[:, :, channel], title=title, colormap=cmap)
    return figs


def apptest_sizes(query: dict, seed: int = 0) -> dict:
    """Run the real app in AppTest; sizes of what its elements carry."""
    import keras
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(C.ROOT / "app.py"), default_timeout=300)
    for k, v in query.items():
        at.query_params[k] = v
    keras.utils.set_random_seed(seed)  # the app builds VGG16 inside this run: same weights as the replica
    t, _ = C.timed(at.run)
    if at.exception:
        raise RuntimeError(f"app raised: {[e.value for e in at.exception]}")
    charts = {}
    for el in at.get("plotly_chart"):
        p = el.proto
        charts[f"chart{len(charts)}"] = {"spec_bytes": len(p.spec.encode()), "proto_bytes": p.ByteSize(),
                                         "id": p.id[:60]}
    total_proto = 0
    kinds: dict[str, int] = {}

    def walk(node):
        nonlocal total_proto
        proto = getattr(node, "proto", None)
        children = getattr(node, "children", None)
        if proto is not None and hasattr(proto, "ByteSize") and not children:
            size = proto.ByteSize()
            total_proto += size
            kinds[type(proto).__name__] = kinds.get(type(proto).__name__, 0) + size
        if children:
            for child in children.values():
                walk(child)

    walk(at._tree)
    return {"run_s": t, "charts": charts, "elements_proto_bytes": total_proto, "by_kind": kinds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-apptest", action="store_true")
    ap.add_argument("--seeds", type=int, default=5, help="untrained VGG16 weight seeds to measure")
    args = ap.parse_args()
    C.header("bench_payload: bytes per view sent to the browser, and figure-building time")

    import keras
    import streamlit.elements.plotly_chart  # noqa: F401 - sets Plotly's default template to Streamlit's, as in the app

    C.quiet_tf()
    from vizlib.extract import forward
    from vizlib.images import load_sample
    from vizlib.layers import conv_layers
    from vizlib.models import load_bundled_model, load_catalogue_model

    results: dict = {"views": {}, "targets": {}}
    for view, spec in VIEWS.items():
        keras.utils.set_random_seed(0)
        m = load_bundled_model() if spec["model"] == "emotion_cnn" else load_catalogue_model("vgg16", None)
        image = load_sample(spec["image"])
        first, last = conv_layers(m)[0], conv_layers(m)[-1]
        acts, output = forward(m, [image], [first.name, last.name], predictions=True)
        print(f"\n--- view {view}: {m.label}, sample {spec['image']}; first {first.name} {first.output_shape}, "
              f"last {last.name} {last.output_shape}")
        figs = build_view(m, image, acts, output)  # warm-up (imports, LUT cache)
        sizes = {}
        for key, fig in figs.items():
            s = streamlit_spec(fig)
            sizes[key] = {"streamlit_spec_bytes": len(s.encode()), "fig_to_json_bytes": len(fig.to_json().encode())}
        total = sum(v["streamlit_spec_bytes"] for v in sizes.values())
        total_tojson = sum(v["fig_to_json_bytes"] for v in sizes.values())
        for key, v in sizes.items():
            print(f"  {key:22s} spec {v['streamlit_spec_bytes'] / 1e3:9.1f} kB   (fig.to_json() "
                  f"{v['fig_to_json_bytes'] / 1e3:.1f} kB)")
        print(f"  {'TOTAL':22s} spec {total / 1e3:9.1f} kB   (fig.to_json() {total_tojson / 1e3:.1f} kB)")

        t_build, t_full = [], []
        for _ in range(args.repeats):
            dt, fs = C.timed(lambda: build_view(m, image, acts, output))
            t_build.append(dt)
            dt2, _ = C.timed(lambda: [streamlit_spec(f) for f in fs.values()])
            t_full.append(dt + dt2)
        per_fig = {}
        for key in figs:
            times = []
            for _ in range(3):
                fs = build_view(m, image, acts, output)
                dt, _ = C.timed(lambda: streamlit_spec(fs[key]))
                times.append(dt)
            per_fig[key] = C.median(times)
        print(f"  build 4 figures: median {C.ms(C.median(t_build))}; build + serialise as Streamlit: "
              f"median {C.ms(C.median(t_full))}  ({args.repeats} repeats)")
        print("  serialise only, per figure: " + ", ".join(f"{k} {C.ms(v)}" for k, v in per_fig.items()))
        seed_totals = {0: total}
        if spec["model"] == "vgg16" and args.seeds > 1:
            for seed in range(1, args.seeds):
                keras.utils.set_random_seed(seed)
                ms = load_catalogue_model("vgg16", None)
                a2, o2 = forward(ms, [image], [first.name, last.name], predictions=True)
                f2 = build_view(ms, image, a2, o2)
                sz = {k: len(streamlit_spec(f).encode()) for k, f in f2.items()}
                seed_totals[seed] = sum(sz.values())
                print(f"  seed {seed}: total {seed_totals[seed] / 1e3:.1f} kB  (" +
                      ", ".join(f"{k} {v / 1e3:.1f} kB" for k, v in sz.items()) + ")")
                del ms, a2, o2, f2
            print(f"  over {args.seeds} seeds: total min {min(seed_totals.values()) / 1e3:.1f} / median "
                  f"{C.median(seed_totals.values()) / 1e3:.1f} / max {max(seed_totals.values()) / 1e3:.1f} kB")
        worst = max(seed_totals.values())
        met = worst <= TARGET_BYTES
        print(f"  view total {worst / 1e6:.3f} MB{' (largest over seeds)' if len(seed_totals) > 1 else ''} "
              f"<= {TARGET_BYTES / 1e6} MB: {C.verdict(met)}")
        entry = {"seed_totals": seed_totals, "worst_total_bytes": worst,"model": m.label, "image": spec["image"], "sizes": sizes, "total_spec_bytes": total,
                 "total_fig_to_json_bytes": total_tojson, "build_s": t_build, "build_and_serialise_s": t_full,
                 "build_median_s": C.median(t_build), "build_and_serialise_median_s": C.median(t_full),
                 "serialise_per_figure_s": per_fig}
        if not args.no_apptest:
            at = apptest_sizes(spec["query"])
            at_total = sum(c["spec_bytes"] for c in at["charts"].values())
            print(f"  AppTest (the real app.py, query {spec['query'] or '{}'}): {len(at['charts'])} plotly charts, "
                  f"spec total {at_total / 1e3:.1f} kB (replica: {total / 1e3:.1f} kB); every element's protobuf "
                  f"{at['elements_proto_bytes'] / 1e3:.1f} kB")
            print("    chart specs: " + ", ".join(f"{c['spec_bytes'] / 1e3:.1f} kB" for c in at["charts"].values())
                  + "   by element kind: " + ", ".join(f"{k} {v / 1e3:.1f} kB" for k, v in
                                                      sorted(at["by_kind"].items(), key=lambda kv: -kv[1])))
            entry["apptest"] = at
            entry["apptest_spec_total_bytes"] = at_total
            met = met and at["elements_proto_bytes"] <= TARGET_BYTES
        results["views"][view] = entry
        results["targets"][f"payload_{view}"] = {"target": "<= 1.5 MB", "value": worst, "met": met}
    C.save("payload", results)


if __name__ == "__main__":
    main()
