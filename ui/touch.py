"""One tap picks a map on a touch screen.

Plotly decides what a click hit from the point under the last *hover*
(``gd._hoverdata``). A mouse hovers before it clicks; a finger doesn't: on a
phone, plotly.js handles the tap's ``touchend`` as a click before the browser's
emulated ``mousemove`` has computed a hover, so the first tap only shows the
tooltip and a second tap on the same cell selects it.

This component (JavaScript in the page, no iframe; ``st.components.v2``) sends
Plotly's drag layer a ``mousemove`` at the finger's position when a single
touch starts, so the hover exists when the tap ends: one tap selects, as one
click does with a mouse. Nothing is sent back to Python and nothing is drawn.
"""

from __future__ import annotations

import streamlit as st
import streamlit.components.v2  # noqa: F401  (st.components.v2)

_JS = """
export default function () {
  if (window.__cnnVizTouchHover) return;
  window.__cnnVizTouchHover = true;
  document.addEventListener("touchstart", (event) => {
    if (event.touches.length !== 1 || !(event.target instanceof Element)) return;
    const layer = event.target.closest(".js-plotly-plot .nsewdrag");
    if (!layer) return;
    const touch = event.touches[0];
    layer.dispatchEvent(new MouseEvent("mousemove", {
      bubbles: true, cancelable: true, view: window,
      clientX: touch.clientX, clientY: touch.clientY,
    }));
  }, { capture: true, passive: true });
}
"""

_CSS = ":host { display: none; }"


def install_touch_select() -> None:
    """Mount the (invisible) component; the listener is added once per browser tab.

    Registered on every run (the same definition again is a no-op): a runtime
    that starts after this module was imported (AppTest) has its own registry.
    """
    st.components.v2.component("cnn_viz_touch_select", js=_JS, css=_CSS)(key="touch-select")
