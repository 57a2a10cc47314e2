"""A floor page for ``bench_graph.py --browser``: a radio that swaps a one-box Plotly chart, in a fragment.

    streamlit run benchmarks/graph_floor_app.py

The same mechanics as the Architecture view's cached repaint (a segmented control in an ``st.fragment``, the
figure an object out of ``st.cache_resource``, ``st.plotly_chart`` with the same keys), with the
smallest figure that still has a filled box and a title: whatever a click costs here is what
Streamlit + plotly.js on this machine put under *any* chart repaint, before the graph adds anything.
"""

import plotly.graph_objects as go
import streamlit as st

st.set_page_config(page_title="floor: one Plotly box", layout="wide")


@st.cache_resource
def figure(boxes: int) -> go.Figure:
    fig = go.Figure()
    for i in range(boxes):
        fig.add_trace(go.Scatter(x=[0, 1, 1, 0, 0], y=[i, i, i + 0.8, i + 0.8, i], mode="lines",
                                 fill="toself", showlegend=False))
    fig.update_layout(title=f"floor: {boxes} boxes", height=500)
    return fig


@st.fragment
def view() -> None:
    detail = st.segmented_control("Draw", ["Stages", "Every layer"], default="Stages", key="graph-detail",
                                  required=True)
    st.plotly_chart(figure(1 if detail == "Stages" else 2), key="graph-chart", on_select="ignore")


st.title("Floor: a radio that swaps a one-box chart")
view()
