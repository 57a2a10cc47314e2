"""ViewState <-> URL query parameters: links that reopen the exact view.

A link carries only what can be rebuilt on another machine: the model (a
catalogue name or the bundled model), its weights, the sample image(s), the
view, the layers and channel on screen and the display settings. Uploaded
images and models can't travel in a URL (the export bundle carries those).

Parsing never fails: anything unknown, out of range or garbled falls back to
its default, and the parser says what it ignored so the page can tell the user.
Checks that need the model (is this layer in it? is this channel in range?)
happen in :func:`validate_for_model`, once the model is loaded.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Iterable, Mapping, Optional, Sequence

from vizlib.attribution.methods import METHODS as ATTRIBUTION_METHODS

VIEWS = ("compare", "explore", "across", "why", "depth", "atlas", "graph", "live")
VIEW_TITLES = {
    "compare": "First vs last conv layer",
    "explore": "Layer explorer",
    "across": "One channel across images",
    "why": "Why this prediction?",
    "depth": "Depth profile",
    "atlas": "Dataset atlas",
    "graph": "Architecture",
    "live": "Live camera",
}
MODES = ("first", "top", "contrib")
SCALES = ("shared", "channel")
WEIGHTS = ("imagenet", "untrained")
SOURCES = ("sample", "upload", "camera")
TOGGLES = ("off", "on")
MAX_GRID = 256  # the grid-size slider's maximum
MAX_CHANNEL = 100_000
MAX_CLASS = 100_000
_NAME = re.compile(r"^[A-Za-z0-9_./#:+-]{1,200}$")
#: A map cell in a link, "row,col" (ASCII digits: int() would also take full-width and other scripts' digits).
CELL = re.compile(r"^([0-9]{1,5}),([0-9]{1,5})$")
_PATH = re.compile(r"^[A-Za-z0-9_.+-]{1,100}(/[A-Za-z0-9_.+-]{1,100}){0,7}$")


@dataclass(frozen=True)
class ViewState:
    """Everything that decides what is on screen, in plain values."""

    model: str = "emotion_cnn"
    weights: str = "imagenet"
    source: str = "sample"
    image: str = "astronaut_face"
    view: str = "compare"
    layer: str = ""  # explorer / across-images layer ("" = the model's first conv layer)
    inspect: str = ""  # the layer whose channel is inspected in the compare view ("" = first conv)
    channel: int = 0  # the channel inspected (detail heatmap) / compared across images
    mode: str = "first"  # grid shows the first N channels, the N most active, or the N most contributing
    n: int = 49  # grid size
    scale: str = "shared"  # one colour scale for the grid, or one per channel
    cmap: str = "viridis"
    images: tuple[str, ...] = ()  # samples in the across-images view (() = all samples)
    cls: int = -1  # the class explained (-1: the top prediction)
    camlayer: str = ""  # the layer Grad-CAM reads ("" = the final feature map)
    opacity: int = 50  # Grad-CAM overlay opacity, percent
    twin: str = "off"  # "on": the untrained twin side by side
    cell: str = ""  # "row,col" of the inspected map position (its receptive field), "" = none
    fv: str = "off"  # "on": feature visualisations beside the maps
    atlas: str = ""  # an atlas folder, relative to the host's atlas root
    method: str = "gradcam"  # the attribution method shown big on the Why view's scoreboard


DEFAULT = ViewState()
#: Written into every link even at their defaults, because the app's default
#: model depends on the machine (VGG16 when its weights are cached).
ALWAYS = ("model", "image")
PARAMS = tuple(f.name for f in fields(ViewState))
#: What each view reads besides the model, image and display settings: a link carries no more.
VIEW_PARAMS: dict[str, tuple[str, ...]] = {
    "compare": ("inspect", "channel", "mode", "n", "scale", "cmap", "fv", "cell"),
    "explore": ("layer", "channel", "mode", "n", "scale", "cmap", "fv", "cell"),
    "across": ("layer", "channel", "cmap", "images"),
    "why": ("cls", "camlayer", "opacity", "twin", "cmap", "mode", "n", "scale", "channel", "method"),
    "depth": (),
    "atlas": ("layer", "channel", "atlas", "cmap"),
    "graph": (),
    "live": (),
}


def applies(state: ViewState, key: str) -> bool:
    """Whether ``key`` matters for ``state`` (so a link carries it)."""
    if key == "image":  # an upload on screen names no sample (the page leaves it empty)
        return bool(state.image)
    if key in ("model", "source", "view"):
        return True
    if key == "weights":
        return state.model not in ("emotion_cnn",) and "/" not in state.model
    return key in VIEW_PARAMS.get(state.view, ())


def canonical(state: ViewState, default: ViewState = DEFAULT) -> ViewState:
    """``state`` with what doesn't apply to its view (and model) set to ``default``: what a link reopens."""
    return replace(state, **{f.name: getattr(default, f.name) for f in fields(ViewState)
                             if not applies(state, f.name)})


def to_query(state: ViewState, default: ViewState = DEFAULT) -> dict[str, str]:
    """The query parameters for ``state``: what applies to its view and differs from ``default``."""
    out: dict[str, str] = {}
    for f in fields(ViewState):
        value = getattr(state, f.name)
        if not applies(state, f.name):
            continue
        if value == getattr(default, f.name) and f.name not in ALWAYS:
            continue
        out[f.name] = ",".join(value) if isinstance(value, tuple) else str(value)
    return out


def _last(value: Any) -> str:
    """A parameter given several times counts with its last value (as browsers' URLSearchParams.get does not)."""
    if isinstance(value, (list, tuple)):
        value = value[-1] if value else ""
    return str(value)


class _Ignore(ValueError):
    """A parameter value that doesn't parse; the message says why."""


def _choice(options: Sequence[str], why: str):
    def parse(raw: str, ctx: dict) -> str:
        if raw in options:
            return raw
        raise _Ignore(why)
    return parse


def _integer(lo: int, hi: int, low_why: str, high_why: str):
    def parse(raw: str, ctx: dict) -> int:
        if not re.fullmatch(r"[+-]?[0-9]{1,9}", raw):  # ASCII digits only (int() takes any)
            raise _Ignore("not a whole number")
        number = int(raw)
        if number < lo:
            raise _Ignore(low_why)
        if number > hi:
            raise _Ignore(high_why)
        return number
    return parse


def _named(known: Optional[str], unknown_why: str, bad_why: str, allow_empty: bool = False):
    def parse(raw: str, ctx: dict) -> str:
        if allow_empty and raw == "":
            return raw
        pool = ctx.get(known) if known else None
        if pool is not None and raw not in pool:
            raise _Ignore(unknown_why)
        if not _NAME.match(raw):
            raise _Ignore(bad_why)
        return raw
    return parse


def _colormap(raw: str, ctx: dict) -> str:
    cmaps = ctx.get("colormaps")
    if (cmaps is None and _NAME.match(raw)) or (cmaps is not None and raw in cmaps):
        return raw
    raise _Ignore("unknown colormap")


def _cell(raw: str, ctx: dict) -> str:
    if raw == "" or CELL.match(raw):
        return raw
    raise _Ignore("use row,col (two whole numbers)")


def _atlas(raw: str, ctx: dict) -> str:
    if raw == "" or (_PATH.match(raw) and ".." not in raw.split("/")):
        return raw
    raise _Ignore("not a folder name under the atlas root")


#: key -> parser(raw, context) -> value; a parser raises _Ignore(why) for a value it can't take.
_PARSERS = {
    "model": _named("models", "unknown model", "not a model name"),
    "weights": _choice(WEIGHTS, "use imagenet or untrained"),
    "source": _choice(SOURCES, "unknown image source"),
    "image": _named("samples", "not one of the sample images (uploads can't travel in a link)", "not an image name"),
    "view": _choice(VIEWS, "unknown view"),
    "layer": _named(None, "", "not a layer name", allow_empty=True),
    "inspect": _named(None, "", "not a layer name", allow_empty=True),
    "camlayer": _named(None, "", "not a layer name", allow_empty=True),
    "channel": _integer(0, MAX_CHANNEL, "channels are numbered from 0", "no layer has that many channels"),
    "n": _integer(1, MAX_GRID, f"the grid shows 1 to {MAX_GRID} maps", f"the grid shows 1 to {MAX_GRID} maps"),
    "cls": _integer(-1, MAX_CLASS, "classes are numbered from 0 (-1: the top prediction)",
                    "no model has that many classes"),
    "opacity": _integer(0, 100, "opacity is 0 to 100", "opacity is 0 to 100"),
    "mode": _choice(MODES, "use first, top or contrib"),
    "scale": _choice(SCALES, "use shared or channel"),
    "cmap": _colormap,
    "twin": _choice(TOGGLES, "use on or off"),
    "fv": _choice(TOGGLES, "use on or off"),
    "cell": _cell,
    "atlas": _atlas,
    "method": _choice(ATTRIBUTION_METHODS, f"use one of {', '.join(ATTRIBUTION_METHODS)}"),
}


def from_query(params: Mapping[str, Any], *, models: Optional[Iterable[str]] = None,
               samples: Optional[Iterable[str]] = None, colormaps: Optional[Iterable[str]] = None,
               default: ViewState = DEFAULT) -> tuple[ViewState, list[str]]:
    """Parse query parameters into a :class:`ViewState`, never raising.

    Returns the state and a list of notices, one per parameter that was ignored
    (unknown name, bad value) and fell back to its default.
    """
    ctx = {
        "models": set(models) if models is not None else None,
        "samples": set(samples) if samples is not None else None,
        "colormaps": set(colormaps) if colormaps is not None else None,
    }
    values: dict[str, Any] = {}
    notices: list[str] = []

    def ignore(key: str, raw: str, why: str) -> None:
        shown = raw if len(raw) <= 40 else raw[:37] + "..."
        notices.append(f"Ignored {key[:40]}={shown!r} from the link: {why}.")

    for key in list(params)[:200]:
        raw = _last(params[key])[:2000].strip()
        key = str(key)
        if key == "images":
            names = [p for p in (s.strip() for s in raw.split(",")) if p][:500]
            pool = ctx["samples"]
            good = [p for p in names if _NAME.match(p) and (pool is None or p in pool)]
            bad = [p for p in names if p not in good]
            if bad:
                ignore(key, ",".join(bad), "not sample images")
            values[key] = tuple(dict.fromkeys(good))
            continue
        parser = _PARSERS.get(key)
        if parser is None:
            ignore(key, raw, "not a setting of this page")
            continue
        try:
            values[key] = parser(raw, ctx)
        except _Ignore as why:
            ignore(key, raw, str(why))
    return replace(default, **values), notices


def validate_for_model(state: ViewState, layer_names: Sequence[str], channels_of: Mapping[str, int],
                       default_layer: str = "", final_layer: str = "") -> tuple[ViewState, list[str]]:
    """Drop layer names this model doesn't have and reset an out-of-range channel; say what changed.

    ``default_layer`` is the layer a view shows when the state names none (the first conv layer);
    ``final_layer`` the one the "why" view explains by default (the final feature map).
    """
    notices: list[str] = []
    updates: dict[str, Any] = {}
    for key in ("layer", "inspect", "camlayer"):
        name = getattr(state, key)
        if name and name not in layer_names:
            notices.append(f"Ignored {key}={name!r}: this model has no layer with 2D maps of that name.")
            updates[key] = ""
    key = {"compare": "inspect", "why": "camlayer", "depth": ""}.get(state.view, "layer")
    fallback = (final_layer or default_layer) if state.view == "why" else default_layer
    layer = (updates.get(key, getattr(state, key)) if key else "") or (fallback if key else "")
    if layer and layer in channels_of and state.channel >= channels_of[layer]:
        notices.append(f"Ignored channel={state.channel}: layer '{layer}' has channels 0 to {channels_of[layer] - 1}.")
        updates["channel"] = 0
    return replace(state, **updates), notices


def as_dict(state: ViewState) -> dict[str, Any]:
    """Plain-JSON form of a state (for the export manifest)."""
    d = asdict(state)
    d["images"] = list(state.images)
    return d


def from_dict(d: Mapping[str, Any], **kwargs: Any) -> tuple[ViewState, list[str]]:
    """Inverse of :func:`as_dict`, as forgiving as :func:`from_query`."""
    params = {k: (",".join(v) if isinstance(v, (list, tuple)) else v) for k, v in d.items()}
    return from_query(params, **kwargs)


# Arguments of the wrong type are InputErrors naming them (vizlib.arguments).
from vizlib.arguments import check_namespace as _check_namespace  # noqa: E402

_check_namespace(globals(), [n for n, v in list(globals().items()) if not n.startswith("_") and callable(v)
                             and getattr(v, "__module__", "") == __name__])
