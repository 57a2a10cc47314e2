"""Bring a table's selected row into view.

``st.dataframe(..., selection_default=...)`` selects a row but leaves the grid
scrolled to the top, so a layer opened from elsewhere (a click on the depth
profile) sat selected but out of sight below the first rows. This component
(JavaScript in the page, no iframe; ``st.components.v2``) scrolls the grid of
the element keyed ``key`` so that row ``row`` is visible, once per change of
row, and only when it is not already visible (a row the visitor clicked stays
where it is). Nothing is sent back to Python and nothing is drawn.
"""

from __future__ import annotations

import streamlit as st
import streamlit.components.v2  # noqa: F401  (st.components.v2)

#: Streamlit's default row height of st.dataframe, and its header's.
ROW_PX = 35
HEADER_PX = 35

_JS = """
export default function (component) {
  const { data } = component;
  if (!data) return;
  const { key, row, rowPx, headerPx } = data;
  window.__cnnVizScrolled = window.__cnnVizScrolled || {};
  const wanted = key + "#" + row;
  if (window.__cnnVizScrolled[key] === wanted) return;
  let tries = 0;
  const go = () => {
    if (tries++ > 100) return;  // ~10 s: the grid never came
    const host = document.querySelector(".st-key-" + CSS.escape(key));
    const scroller = host && host.querySelector(".dvn-scroller");
    const top = headerPx + row * rowPx;
    // the grid is laid out when its scroll area is as tall as its rows
    if (!scroller || scroller.clientHeight === 0 || scroller.scrollHeight < top + rowPx) {
      setTimeout(go, 100);
      return;
    }
    const seen = scroller.scrollTop + headerPx;
    const bottom = scroller.scrollTop + scroller.clientHeight - rowPx;
    if (top < seen || top > bottom) {
      const target = Math.max(0, top - headerPx - (scroller.clientHeight - headerPx - rowPx) / 2);
      scroller.scrollTop = target;
      if (Math.abs(scroller.scrollTop - target) > 1) { setTimeout(go, 100); return; }
    }
    window.__cnnVizScrolled[key] = wanted;
  };
  go();
}
"""

_CSS = ":host { display: none; }"


def scroll_to_row(key: str, row: int) -> None:
    """Scroll the ``st.dataframe`` keyed ``key`` so that its row ``row`` (0-based) is in view."""
    st.components.v2.component("cnn_viz_scroll_to_row", js=_JS, css=_CSS)(
        key=f"scroll-{key}", data={"key": key, "row": int(row), "rowPx": ROW_PX, "headerPx": HEADER_PX})
