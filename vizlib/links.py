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

VIEWS = ("compare", "explore", "across")
VIEW_TITLES = {
    "compare": "First vs last conv layer",
    "explore": "Layer explorer",
    "across": "One channel across images",
}
MODES = ("first", "top")
SCALES = ("shared", "channel")
WEIGHTS = ("imagenet", "untrained")
SOURCES = ("sample", "upload", "camera")
MAX_GRID = 256  # the grid-size slider's maximum
MAX_CHANNEL = 100_000
_NAME = re.compile(r"^[A-Za-z0-9_./#:+-]{1,200}$")


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
    mode: str = "first"  # grid shows the first N channels, or the N most active
    n: int = 49  # grid size
    scale: str = "shared"  # one colour scale for the grid, or one per channel
    cmap: str = "viridis"
    images: tuple[str, ...] = ()  # samples in the across-images view (() = all samples)


DEFAULT = ViewState()
#: Written into every link even at their defaults, because the app's default
#: model depends on the machine (VGG16 when its weights are cached).
ALWAYS = ("model", "weights", "image")
PARAMS = tuple(f.name for f in fields(ViewState))


def to_query(state: ViewState, default: ViewState = DEFAULT) -> dict[str, str]:
    """The query parameters for ``state``: only what differs from ``default``, as strings."""
    out: dict[str, str] = {}
    for f in fields(ViewState):
        value = getattr(state, f.name)
        if value == getattr(default, f.name) and f.name not in ALWAYS:
            continue
        if isinstance(value, tuple):
            out[f.name] = ",".join(value)
        else:
            out[f.name] = str(value)
    return out


def _first(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        value = value[-1] if value else ""
    return str(value)


def from_query(params: Mapping[str, Any], *, models: Optional[Iterable[str]] = None,
               samples: Optional[Iterable[str]] = None, colormaps: Optional[Iterable[str]] = None,
               default: ViewState = DEFAULT) -> tuple[ViewState, list[str]]:
    """Parse query parameters into a :class:`ViewState`, never raising.

    Returns the state and a list of notices, one per parameter that was ignored
    (unknown name, bad value) and fell back to its default.
    """
    models = set(models) if models is not None else None
    samples_set = set(samples) if samples is not None else None
    cmaps = set(colormaps) if colormaps is not None else None
    values: dict[str, Any] = {}
    notices: list[str] = []

    def ignore(key: str, raw: str, why: str) -> None:
        shown = raw if len(raw) <= 40 else raw[:37] + "..."
        notices.append(f"Ignored {key}={shown!r} from the link: {why}.")

    for key in params:
        raw = _first(params[key]).strip()
        if key not in PARAMS:
            ignore(key, raw, "not a setting of this page")
            continue
        if key == "model":
            if models is not None and raw not in models:
                ignore(key, raw, "unknown model")
            elif _NAME.match(raw):
                values[key] = raw
            else:
                ignore(key, raw, "not a model name")
        elif key == "weights":
            (values.__setitem__(key, raw) if raw in WEIGHTS else ignore(key, raw, "use imagenet or untrained"))
        elif key == "source":
            (values.__setitem__(key, raw) if raw in SOURCES else ignore(key, raw, "unknown image source"))
        elif key == "image":
            if samples_set is not None and raw not in samples_set:
                ignore(key, raw, "not one of the sample images (uploads can't travel in a link)")
            elif _NAME.match(raw):
                values[key] = raw
            else:
                ignore(key, raw, "not an image name")
        elif key == "view":
            (values.__setitem__(key, raw) if raw in VIEWS else ignore(key, raw, "unknown view"))
        elif key in ("layer", "inspect"):
            if raw == "" or _NAME.match(raw):
                values[key] = raw
            else:
                ignore(key, raw, "not a layer name")
        elif key in ("channel", "n"):
            try:
                number = int(raw)
            except ValueError:
                ignore(key, raw, "not a whole number")
                continue
            lo, hi = (0, MAX_CHANNEL) if key == "channel" else (1, MAX_GRID)
            if lo <= number <= hi:
                values[key] = number
            else:
                ignore(key, raw, f"out of range {lo} to {hi}")
        elif key == "mode":
            (values.__setitem__(key, raw) if raw in MODES else ignore(key, raw, "use first or top"))
        elif key == "scale":
            (values.__setitem__(key, raw) if raw in SCALES else ignore(key, raw, "use shared or channel"))
        elif key == "cmap":
            if (cmaps is None and _NAME.match(raw)) or (cmaps is not None and raw in cmaps):
                values[key] = raw
            else:
                ignore(key, raw, "unknown colormap")
        elif key == "images":
            names = [p for p in (s.strip() for s in raw.split(",")) if p]
            good = [p for p in names if _NAME.match(p) and (samples_set is None or p in samples_set)]
            bad = [p for p in names if p not in good]
            if bad:
                ignore(key, ",".join(bad), "not sample images")
            values[key] = tuple(dict.fromkeys(good))
    return replace(default, **values), notices


def validate_for_model(state: ViewState, layer_names: Sequence[str], channels_of: Mapping[str, int],
                       default_layer: str = "") -> tuple[ViewState, list[str]]:
    """Drop layer names this model doesn't have and reset an out-of-range channel; say what changed.

    ``default_layer`` is the layer a view shows when the state names none (the first conv layer).
    """
    notices: list[str] = []
    updates: dict[str, Any] = {}
    for key in ("layer", "inspect"):
        name = getattr(state, key)
        if name and name not in layer_names:
            notices.append(f"Ignored {key}={name!r}: this model has no layer with 2D maps of that name.")
            updates[key] = ""
    key = "inspect" if state.view == "compare" else "layer"
    layer = updates.get(key, getattr(state, key)) or default_layer
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
