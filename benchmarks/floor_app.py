"""A baseline page for bench_browser.py: the same four Plotly chart kinds as the app's default view, no model.

    streamlit run benchmarks/floor_app.py

Synthetic maps of the default view's shapes (62x62x8 first layer, 4x4x7 last
layer, a 62x62 heatmap, 5 bars) drawn with vizlib.figures, in the same wide
layout, without TensorFlow. Its load time in a browser is the floor that
Streamlit + plotly.js on this machine put under any page like the app's.
"""

import sys
from pathlib import Path

import streamlit as st

st.set_page_config(page_title="floor: 4 Plotly charts", layout="wide")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from vizlib.figures import channel_detail, channel_grid, prediction_bars  # noqa: E402

CONFIG = {"displaylogo": False}
y, x = np.mgrid[0:62, 0:62] / 62.0
first = np.stack([np.sin((k + 1) * 3 * x + k) * np.cos((k + 2) * 2 * y) for k in range(8)], axis=-1).astype(np.float32)
last = np.random.default_rng(0).random((4, 4, 7)).astype(np.float32)

st.title("Floor: the app's four chart kinds, no model")
left, right = st.columns([1, 2])
left.write("Baseline page for bench_browser.py.")
with right:
    st.plotly_chart(prediction_bars([("happy", 0.6), ("neutral", 0.2), ("sad", 0.1), ("fear", 0.06), ("angry", 0.04)],
                                    title="Top-5 predictions"), key="predictions", config={"displayModeBar": False})
a, b = st.columns(2)
with a:
    st.plotly_chart(channel_grid(first, highlight=0, title="first"), key="grid-first", config=CONFIG)
with b:
    st.plotly_chart(channel_grid(last, labels=["a", "b", "c", "d", "e", "f", "g"], title="last"), key="grid-last",
                    config=CONFIG)
st.plotly_chart(channel_detail(first[:, :, 0], title="detail"), key="detail", config=CONFIG)
