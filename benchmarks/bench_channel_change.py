"""One channel across images: a channel change is display-only when the layer fits the budget.

    python benchmarks/bench_channel_change.py [--repeats 3]

The page (through Streamlit's AppTest, in this process) opens *One channel
across images* for VGG16 (untrained weights: no download, same shapes and
costs as ImageNet's) on the 13 samples at ``block5_conv3``, then changes the
channel several times. Counted: forward passes (calls into vizlib.extract)
and server time per rerun; reported as the ratio channel change / opening the
view, measured in the same run. A second case repeats it at ``block1_conv2``
(224x224x64: 13 images are 167 MB, over the 48 MB the page keeps per chunk of
8 images), where a channel change still computes, one channel in the graph.
"""

from __future__ import annotations

import argparse
import time

from _common import ROOT, median, save

from streamlit.testing.v1 import AppTest


def run(layer: str, repeats: int) -> dict:
    from vizlib import extract

    calls: list[str] = []
    real = {name: getattr(extract, name) for name in ("forward", "activations", "channel_across_images")}

    def counting(name):
        def wrapper(*a, **k):
            calls.append(name)
            return real[name](*a, **k)
        return wrapper

    for name in real:
        setattr(extract, name, counting(name))
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=900)
        at.query_params.update(model="vgg16", weights="untrained", view="across", layer=layer, channel="0")
        t = time.perf_counter()
        at.run()
        open_s = time.perf_counter() - t
        assert not at.exception and not at.error, [e.value for e in at.error]
        open_calls = len(calls)
        changes, change_calls = [], []
        for i in range(1, repeats + 1):
            calls.clear()
            t = time.perf_counter()
            at.number_input(key="channel").set_value(i * 7).run()
            changes.append(time.perf_counter() - t)
            change_calls.append(len(calls))
            assert not at.exception and not at.error
    finally:
        for name, fn in real.items():
            setattr(extract, name, fn)
    return {"layer": layer, "open_s": open_s, "open_forward_calls": open_calls,
            "change_s_median": median(changes), "change_forward_calls": change_calls,
            "change_over_open": median(changes) / open_s}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import os

    os.environ.setdefault("CNN_VIZ_OFFLINE", "1")
    results = [run("block5_conv3", args.repeats), run("block1_conv2", args.repeats)]
    for r in results:
        print(f"{r['layer']}: open {r['open_s']:.2f} s ({r['open_forward_calls']} calls into vizlib.extract); "
              f"channel change {r['change_s_median']:.2f} s (calls per change: {r['change_forward_calls']}); "
              f"change / open = {r['change_over_open']:.2f}")
    save("channel_change", {"cases": results})


if __name__ == "__main__":
    main()
