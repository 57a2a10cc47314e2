"""The Why view's scoreboard: every attribution method for the chosen class, each with its evidence.

Each map carries its deletion and insertion AUC (faithfulness), its rank
correlation with the untrained twin's map (the model-randomisation check) and
its cost; clicking a map's button makes it the big one (``method`` in the link).
Maps are computed on demand, cheapest first, and cached by content.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from vizlib import explain_figures as xf
from vizlib.attribution import METHOD_TITLES, METHODS, forward_seconds, score_method
from vizlib.attribution.figures import thumbnail
from vizlib.contract import VizModel
from vizlib.errors import InputError
from vizlib.explain import GradientsUnsafe
from ui.caches import CHART_CONFIG, get_untrained_twin
from ui.state import link_has

#: Above this rank correlation with the untrained twin's map, a method fails the randomisation check.
RANDOMISATION_LIMIT = 0.5


@st.cache_data(max_entries=8, show_spinner=False)
def _unit(model_key: str, image_key: str, _m: VizModel, _image: Any) -> float:
    return forward_seconds(_m, _image)


@st.cache_data(max_entries=128, show_spinner=False)
def _scored(model_key: str, image_key: str, cls: int, method: str, _m: VizModel, _image: Any, _unit: float):
    """One scoreboard row, keyed by content (the measured unit is not part of the key)."""
    twin = get_untrained_twin(model_key, _m)
    return score_method(_m, _image, method, cls, twin=twin, unit_seconds=_unit)


def _set_method(method: str) -> None:
    st.session_state["method"] = method


def scoreboard(m: VizModel, image_key: str, image: Any, class_index: int, class_name: str,
               base: np.ndarray, opacity: float, method: str = "gradcam") -> dict[str, np.ndarray]:
    """Draw the scoreboard for ``class_index``, ``method`` (the link's) the big map; returns the big map
    as arrays for the view's export."""
    ss = st.session_state  # only this view's own memory ("_attr_started") is kept here
    st.subheader("Which map to trust? Eight attribution methods, measured on this image")
    st.caption("Deletion AUC: the class probability as the most salient pixels are replaced by the blurred "
               "image (lower: the map found what the model needs). Insertion AUC: as they are put back into "
               "the blurred image (higher is better). ρ untrained: rank correlation with the same method's map "
               f"for the untrained twin (above {RANDOMISATION_LIMIT}: the map shows the image more than the "
               "model). Cost: seconds, and in forward passes of this model.")
    method = method if method in METHODS else "gradcam"
    key = (m.key, image_key)  # once asked for, the scoreboard follows class changes on this image
    started = ss.get("_attr_started") == key or link_has("method")
    if not started:
        if st.button("Compute the scoreboard (all eight maps)", key="attr-go",
                     help="Takes a few seconds on small models and about a minute on VGG16; the cheap "
                          "methods come first and everything is cached."):
            ss["_attr_started"] = key
            started = True
    if not started:
        return {}
    ss["_attr_started"] = key
    progress = st.progress(0.0, text="Timing one forward pass…")
    try:
        unit = _unit(m.key, image_key, m, image)
    except InputError as exc:
        progress.empty()
        st.error(str(exc))
        return {}
    scores: dict[str, Any] = {}
    for i, name in enumerate(METHODS):
        progress.progress(i / len(METHODS), text=f"{METHOD_TITLES[name]} ({i + 1} of {len(METHODS)})…")
        try:
            scores[name] = _scored(m.key, image_key, int(class_index), name, m, image, unit)
        except (InputError, GradientsUnsafe) as exc:  # e.g. no layer to cut at; gradients unsafe here
            scores[name] = str(exc)
    progress.empty()
    big = scores.get(method)
    if not isinstance(big, str) and big is not None:
        fig = xf.gradcam_overlay(base, big.map, opacity=opacity, class_name=class_name, method=big.title,
                                 title=f"{big.title}: where the model looked for <b>{class_name}</b>")
        st.plotly_chart(fig, key="attr-big", config=CHART_CONFIG)
        st.caption(f"The big map: **{big.title}** (`method={method}` in the link).")
    cols = st.columns(4)
    for i, name in enumerate(METHODS):
        s = scores[name]
        with cols[i % 4]:
            if isinstance(s, str):
                st.markdown(f"**{METHOD_TITLES[name]}**")
                st.caption(f"Not available here: {s}")
                continue
            st.image(thumbnail(base, s.map, opacity=opacity), width="stretch")
            rho = "n/a" if s.randomisation is None else f"{s.randomisation:.2f}"
            flag = " ⚠ fails" if s.randomisation is not None and s.randomisation > RANDOMISATION_LIMIT else ""
            units = "" if s.forward_units is None else f" = {s.forward_units:.0f} forward passes"
            st.caption(f"deletion {s.deletion_auc:.3f} · insertion {s.insertion_auc:.3f} · "
                       f"ρ untrained {rho}{flag} · {s.seconds:.2f} s{units}")
            key = f"attr-pick-{name.replace('+', 'p')}"  # widget keys become CSS classes: no "+"
            st.button(("▶ " if name == method else "") + METHOD_TITLES[name], key=key,
                      on_click=_set_method, args=(name,), width="stretch",
                      type="primary" if name == method else "secondary")
    good = {k: v for k, v in scores.items() if not isinstance(v, str)}
    if good:
        best_del = min(good.values(), key=lambda s: s.deletion_auc)
        best_ins = max(good.values(), key=lambda s: s.insertion_auc)
        st.caption(f"Here, the most faithful by deletion: **{best_del.title}**; by insertion: "
                   f"**{best_ins.title}**.")
    return {} if big is None or isinstance(big, str) else {f"attribution_{method}": big.map[None]}
