"""The page's state: widgets in ``st.session_state``, seeded from the URL once, mirrored back to it.

Every setting is a field of :class:`vizlib.links.ViewState` and a widget key of
the same name, so a link reopens exactly the view on screen.

Who may touch ``st.session_state`` (issue #19: the page receives its state).
The page (``ui/page.py``) builds the checked :class:`ViewState` once per run
(:func:`checked_state`, after the sidebar's widgets are drawn and before any
view draws) and passes it down; views and their helpers read its fields, or
the values their own widgets return, never a setting from ``st.session_state``.
What stays in ``st.session_state``:

- this module: seeding from the URL, checking widget values against this run's
  model and image, and the writes a view asks for through :func:`put` (a widget
  set before it is drawn: a channel put in range, the most active channel; a
  mirror such as ``twin`` of the ``twin_on`` toggle; a switch of view);
- widgets created with ``key=`` (Streamlit owns those values);
- callbacks (``on_change`` / ``on_click`` / ``on_select``) that write state
  for the next run, and what they call;
- private per-session bookkeeping: keys starting with ``_`` and a view's own
  memory (caches of what it opened or built, keyed by its widgets' keys).

``tests/test_state_reads.py`` checks this over ``ui/*.py`` and names every
exception.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import fields, replace
from typing import Any, Callable, Optional, Sequence

import streamlit as st

from vizlib.errors import InputError
from vizlib.figures import COLORMAPS
from vizlib.images import SAMPLES, file_digest, sample_path
from vizlib.links import DEFAULT, MAX_GRID, MODES, SCALES, TOGGLES, VIEWS, ViewState, from_query, to_query
from vizlib.models import imagenet_weights_cached
from ui.caches import model_options


def default_state() -> ViewState:
    """VGG16 on the cat when its ImageNet weights are cached (the tutorial's model), else the bundled model."""
    if imagenet_weights_cached("vgg16"):
        return ViewState(model="vgg16", weights="imagenet", image="cat")
    return DEFAULT


def init_state() -> None:
    """On a session's first run, seed every widget from the URL (ignoring, with a notice, what doesn't parse)."""
    if st.session_state.get("_seeded"):
        return
    default = default_state()
    state, notices = from_query(st.query_params.to_dict(), models=model_options(), samples=list(SAMPLES),
                                colormaps=COLORMAPS, default=default)
    for f in fields(ViewState):
        st.session_state[f.name] = getattr(state, f.name)
    st.session_state["images"] = list(state.images) or list(SAMPLES)
    st.session_state["_notices"] = notices
    st.session_state["_default"] = default
    # No channel in the link: open on the first layer's most active channel, not on channel 0
    # (often a dead one), so a newcomer's first look at a single map shows something.
    st.session_state["_auto_channel"] = not link_has("channel")
    st.session_state["_seeded"] = True


def link_has(name: str) -> bool:
    """Whether the page's URL (the link it was opened with, kept in sync with the view since) names ``name``.

    Views ask this instead of reading ``st.query_params`` themselves: the URL is read and written here only.
    """
    return name in st.query_params


def current_state() -> ViewState:
    """The widgets' values as a ViewState (what the URL shows)."""
    ss = st.session_state
    d: ViewState = ss.get("_default", DEFAULT)
    values = {}
    for f in fields(ViewState):
        value = ss.get(f.name, getattr(d, f.name))
        if f.name == "images":
            value = tuple(value or ())
            value = () if set(value) == set(SAMPLES) else value
        elif isinstance(getattr(d, f.name), int):
            try:
                value = int(value)
            except (TypeError, ValueError):
                value = getattr(d, f.name)
        elif value is None:
            value = getattr(d, f.name)
        values[f.name] = value
    return ViewState(**values)


def put(**values: Any) -> None:
    """Set settings a view decided on: before their widget is drawn, or for the next run.

    The one way a view writes a setting outside a callback (a channel put in range
    for the layer shown, the most active channel, a toggle's mirror, a switch of
    view); an equal value is not written again.
    """
    ss = st.session_state
    for key, value in values.items():
        if key not in ss or ss[key] != value:
            ss[key] = value


def kept_if_valid(key: str, options: Sequence[Any], default: Any) -> Any:
    """A widget's value if it is one of ``options``, else ``default`` (written back before the widget is drawn)."""
    ss = st.session_state
    if ss.get(key) not in options:
        ss[key] = default
    return ss[key]


def featvis_off_for_a_new_model(model_key: str) -> bool:
    """Feature visualisations switch off when the visitor picks another model (before the sidebar draws
    its toggle): on a big model they are minutes of background work, started only when asked for there.
    A link that names the model and ``fv=on`` still opens with them on. True when they were switched off."""
    ss = st.session_state
    last = ss.get("_fv_model")
    off = ss.get("fv") == "on" and last is not None and last != model_key
    if off:
        ss["fv"], ss["fv_on"] = "off", False
    ss["_fv_model"] = model_key
    return off


def sync_url(state: ViewState) -> None:
    params = to_query(state, st.session_state.get("_default", DEFAULT))
    if params != st.query_params.to_dict():
        st.query_params.from_dict(params)


def share_url(state: ViewState) -> str:
    from urllib.parse import urlencode

    base = (st.context.url or "").split("?")[0] or "http://localhost:8501/"
    if base.count("/") == 2:  # "http://host:port" -> "http://host:port/"
        base += "/"
    return f"{base}?{urlencode(to_query(state, st.session_state.get('_default', DEFAULT)))}"


def image_sha256(image_key: str) -> str:
    kind, _, rest = image_key.partition(":")
    if kind == "sample":
        return file_digest(sample_path(rest).read_bytes())
    return rest.split(":")[0]


# --------------------------------------------------------------------------- checked state (issue #17)
#
# A browser sends a selectbox's value back as its *label*. When the options change
# between runs (another model, another image: the class labels carry probabilities),
# Streamlit hands the page a label string the options don't contain, or a value that
# meant something else for the previous model. So every view control is checked here,
# against the model and image of this run, before its widget is drawn; ``choice`` draws
# a selectbox that re-sends its value every run, so the browser never keeps a stale label.

log = logging.getLogger("cnn_viz")

#: Session keys that belong to a view (reset after a view failed); model/image/view/display stay.
VIEW_KEYS = ("cls", "camlayer", "layer", "inspect", "channel", "cell", "opacity", "twin", "images")
#: Transient per-view keys (widget keys and bookkeeping) dropped with the view keys after a failure.
_TRANSIENT = re.compile(r"^(cell-row-|cell-col-|_why_asked$|twin_on$)")


def remember_labels(key: str, labels: dict[str, Any]) -> None:
    """Record label -> value of a selectbox as drawn this run (to map a label sent back to its meaning)."""
    st.session_state.setdefault("_labels", {})[key] = labels


def meaning(key: str, value: Any) -> Any:
    """A label string the browser sent for selectbox ``key``, mapped to the value it named when drawn."""
    if isinstance(value, str):
        labels = st.session_state.get("_labels", {}).get(key) or {}
        if value in labels:
            return labels[value]
    return value


def _as_int(value: Any) -> Optional[int]:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def choice(where: Any, label: str, options: Sequence[Any], *, key: str,
           format_func: Callable[[Any], str] = str, default: Any = None, **kwargs: Any) -> Any:
    """A selectbox over ``options`` (of this run) that never shows or returns a value from another run.

    The value in the session is mapped from a label to its meaning and checked against
    ``options`` before the widget is drawn (else ``default``, the first option if None), and
    written back every run, so the browser shows this run's label of it (Streamlit then sends
    the value down). The value read back is checked again.
    """
    ss = st.session_state
    options = list(options)
    fallback = default if default in options else options[0]
    value = meaning(key, ss.get(key))
    if value not in options:
        value = fallback
    ss[key] = value
    remember_labels(key, {format_func(o): o for o in options})
    got = where.selectbox(label, options, key=key, format_func=format_func, persist_state="session", **kwargs)
    return got if got in options else value


def number(where: Any, label: str, lo: int, hi: int, *, key: str, default: int = 0, **kwargs: Any) -> int:
    """A whole-number input whose value is in [lo, hi] before it is drawn and after it is read."""
    ss = st.session_state
    value = _as_int(ss.get(key))
    ss[key] = value if value is not None and lo <= value <= hi else min(max(default, lo), hi)
    got = _as_int(where.number_input(label, lo, hi, key=key, persist_state="session", step=1, **kwargs))
    return got if got is not None and lo <= got <= hi else int(ss[key])


def check_display() -> None:
    """Model-independent settings checked before the sidebar draws them (a bad value is reset and logged:
    only a value the page itself never offers can be bad here, a link's were checked when parsed)."""
    ss = st.session_state
    d: ViewState = ss.get("_default", DEFAULT)
    checks = {"mode": lambda v: v in MODES, "scale": lambda v: v in SCALES, "cmap": lambda v: v in COLORMAPS,
              "view": lambda v: v in VIEWS, "twin": lambda v: v in TOGGLES, "fv": lambda v: v in TOGGLES,
              "n": lambda v: _as_int(v) is not None and 1 <= _as_int(v) <= MAX_GRID,
              "opacity": lambda v: _as_int(v) is not None and 0 <= _as_int(v) <= 100}
    for key, ok in checks.items():
        value = meaning(key, ss.get(key, getattr(d, key)))
        if not ok(value):
            log.info("reset %s=%r (not a value of this page)", key, value)
            value = getattr(d, key)
        if key in ("n", "opacity"):
            value = int(value)
        if ss.get(key) != value:
            ss[key] = value


def recover_after_failure() -> bool:
    """After a view raised: reset every view control to its default, so the next run starts clean."""
    ss = st.session_state
    if not ss.pop("_failed", False):
        return False
    d: ViewState = ss.get("_default", DEFAULT)
    for key in VIEW_KEYS:
        ss[key] = list(SAMPLES) if key == "images" else getattr(d, key)
    for key in [k for k in list(ss.keys()) if _TRANSIENT.match(str(k))]:
        del ss[key]
    ss.pop("_labels", None)
    ss.pop("_cls_for", None)
    return True


def run_guarded(draw: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """``draw(*args, **kwargs)``, as the page and every fragment run it: a user's mistake
    (:class:`InputError`) is its message; anything else goes to the server log, marks the session so
    the next run resets the view's controls, and shows one line. (``st.rerun``/``st.stop`` pass through.)
    """
    try:
        draw(*args, **kwargs)
    except InputError as exc:
        st.error(str(exc))
    except Exception:  # noqa: BLE001 - the page must survive anything; details go to the server log
        log.exception("unexpected error while drawing the page")
        mark_failed()  # the next run resets the view's controls: no stale state survives an error
        st.error("Something went wrong while drawing this view. Try another setting; "
                 "the details are in the server log.")


def fragment(draw: Callable[..., None], *, run_every: Optional[float] = None) -> Callable[..., None]:
    """``st.fragment`` of ``draw``, guarded as the page is (a fragment's own reruns skip the page's guard)."""
    @functools.wraps(draw)  # the fragment's identity is the drawing function's
    def guarded(*args: Any, **kwargs: Any) -> None:
        run_guarded(draw, *args, **kwargs)

    return st.fragment(guarded, run_every=run_every)


def mark_failed() -> None:
    """Called when a run raised: the next run resets the view's controls (see recover_after_failure)."""
    try:
        st.session_state["_failed"] = True
    except Exception:  # noqa: BLE001 - never let the recovery itself fail the error page
        log.exception("could not mark the session for recovery")


def check_class(m: Any, n_classes: Optional[int] = None) -> tuple[int, Optional[str]]:
    """The class to explain, checked against this model: (index or -1, a notice or None).

    A class picked for another model keeps its meaning when this model has a class of
    the same name (the ImageNet models share theirs), else the top prediction is explained.
    """
    ss = st.session_state
    names = m.class_names or None
    n = n_classes if n_classes is not None else (len(names) if names else None)
    raw = meaning("cls", ss.get("cls", -1))
    if isinstance(raw, str) and raw.startswith("the top prediction"):
        raw = -1
    value = _as_int(raw)
    notice = None
    previous = ss.get("_cls_for")  # (model key, class name) the class was picked for
    if value is None and isinstance(raw, str):
        name = re.sub(r" \([^()]*%\)$", "", raw)  # "tabby (12.3%)" -> "tabby"
        value = names.index(name) if names and name in names else -1
    if value is not None and value >= 0 and previous and previous[0] != m.key and previous[1]:
        old = previous[1]
        if names and 0 <= value < len(names) and names[value] == old:
            pass
        elif names and old in names:
            value = names.index(old)
        else:
            value = -1
            notice = f"Explaining the top prediction: '{old}' is not a class of {m.label}."
    if value is None or value < -1 or (n is not None and value >= n):
        value = -1
    ss["_cls_for"] = (m.key, names[value] if names and 0 <= value < len(names) else "")
    if ss.get("cls") != value:
        ss["cls"] = value
    return value, notice


def check_cell(cell: Any, shape: Optional[tuple[int, int]]) -> str:
    """A "row,col" inside a map of ``shape`` (H, W), else ""."""
    from vizlib.links import CELL

    match = CELL.match(str(cell or ""))
    if not match or shape is None:
        return ""
    r, c = int(match.group(1)), int(match.group(2))
    return f"{r},{c}" if r < shape[0] and c < shape[1] else ""


def checked_state(m: Any, first: str, final: str, from_link: bool = False) -> tuple[ViewState, list[str]]:
    """This run's state: every view control checked against the model ``m`` (and written back).

    Called once per run, after the model is known and before any view draws a widget.
    Layers the model doesn't have are dropped, the channel and cell are put in range for
    the layer on screen, the class keeps its meaning across ImageNet models or falls back
    to the top prediction; the returned notices say what changed where a visitor would be
    surprised (``from_link``: also what a link named that this model doesn't have).
    """
    from vizlib.layers import spatial_layers
    from vizlib.links import validate_for_model

    ss = st.session_state
    notices: list[str] = []
    if recover_after_failure():
        notices.append("The last view failed to draw; its controls were reset.")
    spatial = spatial_layers(m)
    by_name = {i.name: i for i in spatial}
    for key in ("layer", "inspect", "camlayer"):
        value = meaning(key, ss.get(key, ""))
        ss[key] = value if isinstance(value, str) else ""
    channel = _as_int(ss.get("channel"))
    ss["channel"] = channel if channel is not None and channel >= 0 else 0
    state, dropped = validate_for_model(current_state(), list(by_name), {i.name: i.channels for i in spatial},
                                  default_layer=first, final_layer=final)
    if from_link:  # later, a switch of model just resets what doesn't fit, without a warning
        notices.extend(dropped)
    for key in ("layer", "inspect", "camlayer", "channel"):
        if ss.get(key) != getattr(state, key):
            ss[key] = getattr(state, key)
    cls, notice = check_class(m) if m.is_classifier else (-1, None)
    if notice:
        notices.append(notice)
    shown = {"compare": state.inspect or first, "explore": state.layer or first,
             "why": state.camlayer or final}.get(state.view)
    info = by_name.get(shown) if shown else None
    cell = check_cell(ss.get("cell"), info.output_shape[:2] if info is not None else None) if info else \
        check_cell(ss.get("cell"), (10**6, 10**6))  # views without a cell keep it for later, well-formed
    if from_link and ss.get("cell") and not cell and info is not None:
        h, w = info.output_shape[:2]
        notices.append(f"Ignored cell={str(ss.get('cell'))[:20]} from the link: layer '{info.name}' has a {h}x{w} "
                       f"map (rows 0 to {h - 1}, columns 0 to {w - 1}).")
    if ss.get("cell") != cell:
        ss["cell"] = cell
    images = ss.get("images")
    ss["images"] = [s for s in images if s in SAMPLES] if isinstance(images, (list, tuple)) else list(SAMPLES)
    return replace(current_state(), cls=cls, cell=cell), notices


def on_screen(state: ViewState, image_key: str, model_shown: bool = True) -> ViewState:
    """``state`` as the link should carry it: what is on screen, nothing left from before.

    An upload (or a snapshot) can't travel in a link, so it names no sample image;
    with no model on screen (an error), no layer, channel, cell or class of the last one.
    """
    d: ViewState = st.session_state.get("_default", DEFAULT)
    if image_key.startswith("sample:"):
        state = replace(state, source="sample", image=image_key.split(":", 1)[1])
    else:
        state = replace(state, image="")
    if not model_shown:
        state = replace(state, **{k: getattr(d, k) for k in ("layer", "inspect", "camlayer", "channel", "cell", "cls")})
    return state
