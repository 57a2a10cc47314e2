"""A test page for tests/browser/test_colormaps.py: one channel grid with known cells, drawn by Streamlit.

Nine maps, each one flat value from the bottom to the top of the colour scale, so
the cell labels sit on the darkest, the lightest and every tone between, for the
colormap named in the URL (``?cmap=magma``). Drawn with ``st.plotly_chart`` as
app.py draws its grids, so the browser gets what the app sends.
"""

import numpy as np
import streamlit as st

from vizlib.figures import COLORMAPS, channel_grid

st.set_page_config(page_title="figure test page", layout="wide")
cmap = st.query_params.get("cmap", "viridis")
if cmap not in COLORMAPS:
    st.error(f"unknown colormap {cmap}")
    st.stop()
levels = np.linspace(0.0, 1.0, 9, dtype=np.float32)
maps = np.ones((8, 8, len(levels)), dtype=np.float32) * levels
labels = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "light", "lightest"]
left, _ = st.columns([3, 2])
with left:
    st.plotly_chart(channel_grid(maps, colormap=cmap, cols=9, labels=labels, title=f"labels on {cmap}"),
                    key="labels-grid", config={"displayModeBar": False})
