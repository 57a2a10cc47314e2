"""Optimisations where the model lives: sizes, batch plans, and step-by-step progress as operations.

Each function here is an operation (:mod:`vizlib.ops`) on the model, so the
same code runs in this process or in an uploaded model's own process; an
optimisation's state (its spectra and Adam's moments) stays where the model
is, and the caller advances it a few steps per call (progress, cancelling).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any, Optional, Sequence

import numpy as np

from vizlib.errors import InputError
from vizlib.featvis import param, transform
from vizlib.featvis.graph import (
    PLAIN, PREVIEW_MIN_SIDE, Graph, Recipe, graph, require_safe_gradients, run_lock, sketch_recipe,
)
from vizlib.ops import op

#: Optimisation steps when the caller gives none (see benchmarks/README.md, "Feature visualisation").
DEFAULT_STEPS = 256
MAX_STEPS = 4096
#: Largest default side: the cost of a step grows with the area.
DEFAULT_MAX_SIDE = 128
#: Smallest default side: a first layer's tiny field still shows as a texture of many repeats.
DEFAULT_MIN_SIDE = 64
MIN_SIDE, MAX_SIDE = 16, 512
#: Channels in one optimisation batch are capped so that the backward pass stays within this.
BATCH_BYTES = 384 * 2**20
MAX_CHANNELS = 1024
#: Optimisations kept between calls in one process (a page polls them step by step).
MAX_STATES = 8
STATE_BYTES = 256 * 2**20
#: A polished image has converged when its objective rose less than this (relative) over PATIENCE steps.
CONVERGED = 0.002
PATIENCE = 16
#: The polish's warm-up (``Recipe.polish_warmup``) never takes longer than this many steps.
WARMUP_MAX_STEPS = 8
#: A sketch shorter than this would show little: none then.
MIN_PREVIEW_STEPS = 16
#: Methods a caller may ask for: this project's (``graph.DEFAULT``), and plain gradient ascent (``graph.PLAIN``).
METHODS = ("default", "plain")
#: Statistics of every channel's map on each visualisation (``FeatureVisualization.stats``).
STATS = ("mean", "fired", "activity", "peak", "floor")


def bytes_per_row(m: Any, layer: str, g: Graph) -> int:
    """Rough memory of one batch row's forward + backward up to ``layer`` (for batch sizing)."""
    from vizlib.layers import find_layer

    info = find_layer(m, layer)
    area = (g.canvas[0] * g.canvas[1]) / max(1, int(m.input_size[0]) * int(m.input_size[1]))
    total = 0
    for i in m.layers:
        if i.index > info.index:
            break
        if i.output_shape and all(isinstance(d, int) for d in i.output_shape):
            total += int(np.prod(i.output_shape))
    return int(max(total * area, 1) * 4 * 3)


class State:
    """One optimisation in progress in this process: parameters, Adam's moments, steps done."""

    def __init__(self, m: Any, layer: str, channels: list[int], size: tuple[int, int], steps: int, seed: int,
                 cell: Optional[tuple[int, int]] = None, recipe: Optional[Recipe] = None, watched: bool = False):
        import tensorflow as tf

        self.g = graph(m, layer, size, cell, recipe)
        r = self.g.recipe
        self.km = m.model
        self.size = (int(size[0]), int(size[1]))
        self.steps = int(steps)
        self.done = 0
        self.ran = 0  # steps computed (fewer than ``steps`` when every image converged early)
        self.channels = tf.constant(np.asarray(channels, dtype=np.int32))
        self.transforms = tf.constant(transform.transforms(seed, self.steps, self.g.size, self.g.canvas,
                                                           self.g.ratio, r.jitter, r.polish))
        self.nbytes = 12 * len(channels) * int(np.prod(param.param_shape(int(m.channels), size[0], size[1],
                                                                          r.fourier)))
        self.lock = threading.Lock()
        # A pixel-space polish: the last steps continue from the image so far, on its pixels.
        self.switch_at = self.steps - int(round(self.steps * r.polish)) if r.polish_pixels else None
        self.m, self.layer, self.cell = m, layer, cell
        self.phase_start = 0  # Adam's step count restarts with each phase (new parameters, new moments)
        spec = np.stack([param.initial_params(seed, ch, int(m.channels), size[0], size[1], r.fourier)
                         for ch in channels])
        self.spec = tf.constant(spec)
        self.m1 = tf.zeros_like(self.spec)
        self.m2 = tf.zeros_like(self.spec)
        # While someone watches (the page), a sketch first: the same start and parameterisation without transforms.
        # It forms within a few dozen steps, where the robust phase needs half the run; the optimisation itself is
        # exactly the one without it (the result never changes).
        self.sketch: Optional[State] = None
        n_sketch = preview_steps(self.g, r, self.steps, self.switch_at) if watched else 0
        if n_sketch:
            self.sketch = State(m, layer, channels, size, n_sketch, seed, cell, sketch_recipe(r))
            self.nbytes += self.sketch.nbytes

    def run(self) -> None:
        """Run to the end (the sketch, if any, then every step)."""
        while self.done < self.steps:
            self.advance(self.steps)

    @property
    def sketch_running(self) -> bool:
        """The sketch is still running (its steps come first and don't count in ``done``)."""
        return self.sketch is not None and self.sketch.done < self.sketch.steps

    def advance(self, n: int) -> None:
        """Run up to ``n`` more steps (never past ``steps``); while the sketch runs, ``n`` of its steps."""
        import tensorflow as tf

        if self.sketch_running:
            self.sketch.advance(n)
            return
        with self.lock:
            for _ in range(max(0, min(int(n), self.steps - self.done))):
                if self.switch_at is not None and self.done == self.switch_at:
                    self._to_pixels()
                t = tf.constant(float(self.done + 1 - self.phase_start))
                with run_lock(self.km):
                    spec, m1, m2, obj = self.g.step(
                        self.spec, self.m1, self.m2, t, self.channels, self.transforms[self.done],
                        tf.constant(self._rate()))
                self.objective = np.asarray(obj, dtype=np.float64)
                if self.polishing:
                    spec, m1, m2 = self._converge(spec, m1, m2, self.objective)
                self.spec, self.m1, self.m2 = spec, m1, m2
                self.done += 1
                self.ran += 1
                if self.frozen is not None and self.frozen.all():
                    self.done = self.steps  # every image has converged: the rest of the steps would not move it
                    break

    def _rate(self) -> float:
        """The learning rate's factor this step: 1, except in the polish's first ``polish_warmup`` share, where it
        climbs from 0.1 to 1 (Adam's first steps move every pixel by the full rate whatever the gradient's size:
        at full rate they can throw the robust image away, benchmarks/README.md round 4)."""
        warm = 0.0
        if self.polishing:
            warm = min(WARMUP_MAX_STEPS, self.g.recipe.polish_warmup * max(1, self.steps - self.phase_start - 1))
        k = self.done - self.phase_start
        return 1.0 if k >= warm else 0.1 + 0.9 * k / warm

    polishing = False
    objective: Optional[np.ndarray] = None  # per row: the last step's objective (with that step's transforms)
    frozen: Optional[np.ndarray] = None  # per row: converged, its pixels no longer change
    converged_at: Optional[np.ndarray] = None  # per row: the step it converged at (0: not yet)
    history: Optional[list] = None

    def _converge(self, spec: Any, m1: Any, m2: Any, obj: np.ndarray) -> tuple:
        """Freeze each row whose objective rose less than :data:`CONVERGED` over :data:`PATIENCE` polish steps.

        Judged per row from its own objective, so a channel's image never depends
        on its batch-mates; a frozen row keeps its pixels (and Adam's moments).
        """
        import tensorflow as tf

        if self.frozen is None:
            self.frozen = np.zeros(len(obj), dtype=bool)
            self.converged_at = np.zeros(len(obj), dtype=np.int64)
            self.history = []
        if self._rate() < 1.0:
            # Warm-up: neither judged nor a baseline. Its steps are slow by design, and a window that began in
            # them froze images still climbing (one rose 31 % more once let go; benchmarks/README.md, round 5).
            return spec, m1, m2
        self.history.append(obj)
        if len(self.history) > PATIENCE:
            old = self.history[-1 - PATIENCE]
            gain = (obj - old) / np.maximum(np.abs(old), 1e-6)
            newly = ~self.frozen & (gain < CONVERGED)
            self.converged_at[newly] = self.done + 1
            keep = self.frozen.copy()
            self.frozen |= newly
            if keep.any():
                mask = tf.constant(keep.reshape((-1,) + (1,) * (len(spec.shape) - 1)))
                spec = tf.where(mask, self.spec, spec)
                m1, m2 = tf.where(mask, self.m1, m1), tf.where(mask, self.m2, m2)
            del self.history[0]
        return spec, m1, m2

    def _to_pixels(self) -> None:
        import tensorflow as tf

        from vizlib.featvis.graph import polish_recipe

        with run_lock(self.km):
            img = self.g.pixels(self.spec)
        self.g = graph(self.m, self.layer, self.g.size, self.cell, polish_recipe(self.g.recipe))
        self.spec = tf.constant(np.asarray(img, dtype=np.float32))
        self.m1, self.m2 = tf.zeros_like(self.spec), tf.zeros_like(self.spec)
        self.transforms = tf.constant(transform.transforms(0, self.steps, self.g.size, self.g.canvas, self.g.ratio,
                                                           0.0))
        self.polishing = True
        self.phase_start = self.done

    def preview(self) -> np.ndarray:
        """The images as they are now (uint8, full size), without statistics: cheap enough for every update.

        Per image, the sketch's until the optimisation's own image, in its
        polish (no transforms either: the same objective), is as strong."""
        with run_lock(self.km):
            img = np.asarray(self.g.pixels(self.spec))
            if self.sketch is not None and self.sketch.done:
                mine = self.objective if self.polishing and self.objective is not None else None
                theirs = self.sketch.objective
                use = np.ones(len(img), dtype=bool) if mine is None else ~(mine >= theirs)
                if use.any():
                    img = np.where(use.reshape((-1,) + (1,) * (img.ndim - 1)),
                                   np.asarray(self.sketch.g.pixels(self.sketch.spec)), img)
        return np.asarray(np.round(np.clip(img, 0.0, 1.0) * 255.0), dtype=np.uint8)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """The current images (uint8) and their statistics of every channel (float32 (B, len(STATS), C))."""
        with run_lock(self.km):
            img, stats = self.g.final(self.spec)
        return np.asarray(img, dtype=np.uint8), np.asarray(stats, dtype=np.float32)


def preview_steps(g: Graph, r: Recipe, steps: int, switch_at: Optional[int]) -> int:
    """Steps of the preview sketch: ``r.preview`` of ``steps`` for images of at least
    :data:`~vizlib.featvis.graph.PREVIEW_MIN_SIDE` px (0: none)."""
    if not (r.preview > 0 and min(g.size) >= PREVIEW_MIN_SIDE):
        return 0
    n = int(round(steps * r.preview))
    return n if MIN_PREVIEW_STEPS <= n < (switch_at or steps) else 0


_STATES: "OrderedDict[str, State]" = OrderedDict()
_STATES_LOCK = threading.Lock()


def _state(m: Any, job: str, layer: str, channels: list[int], size: tuple[int, int], steps: int,
           seed: int, cell: Optional[tuple[int, int]], watched: bool, recipe: Optional[Recipe] = None) -> State:
    with _STATES_LOCK:
        found = _STATES.get(job)
        if found is not None:
            _STATES.move_to_end(job)
            return found
    st = State(m, layer, channels, size, steps, seed, cell, recipe, watched=watched)
    with _STATES_LOCK:
        _STATES[job] = st
        while len(_STATES) > MAX_STATES or (
                len(_STATES) > 1 and sum(s.nbytes for s in _STATES.values()) > STATE_BYTES):
            _STATES.popitem(last=False)
    return st


def check_layer_channels(m: Any, layer: str, channels: Sequence[int]) -> list[int]:
    """Channel numbers checked against the layer (from the model's layer list: no computation)."""
    from vizlib.layers import find_layer

    if isinstance(channels, (int, np.integer)) and not isinstance(channels, bool):
        channels = [int(channels)]
    info = find_layer(m, layer)
    chosen = [int(c) for c in channels]
    if not chosen:
        raise InputError("No channels chosen.")
    bad = [c for c in chosen if not 0 <= c < info.channels]
    if bad:
        raise InputError(f"Layer '{layer}' has channels 0 to {info.channels - 1}; there is no channel {bad[0]}.")
    return chosen


def check_cell(m: Any, layer: str, cell: Any) -> Optional[tuple[int, int]]:
    """``cell`` as (row, col) inside the layer's map at the model's input size, or None."""
    from vizlib.layers import find_layer

    if cell is None:
        return None
    try:
        r, c = (int(v) for v in cell)
    except (TypeError, ValueError):
        raise InputError(f"cell must be (row, column) of the layer's map, not {cell!r}.") from None
    shape = find_layer(m, layer).output_shape
    h, w = shape[0], shape[1]
    if not (isinstance(h, int) and isinstance(w, int)):
        raise InputError(f"Layer '{layer}' has no fixed map size, so a single cell can't be chosen.")
    if not (0 <= r < h and 0 <= c < w):
        raise InputError(f"Layer '{layer}' has a {h}x{w} map; there is no cell ({r}, {c}).")
    return r, c


def receptive_field(m: Any, layer: str) -> int:
    """The side (input pixels) of what one unit of ``layer`` sees, from the kernels and strides."""
    side = max(int(m.input_size[0]), int(m.input_size[1]))
    try:
        from vizlib.receptive import receptive_fields

        rf = receptive_fields(m.model, [layer])[layer]
    except Exception:  # noqa: BLE001 - an exotic graph: assume the whole image
        return side
    if rf.y is None or rf.x is None:
        return side
    return int(math.ceil(max(rf.y.hi - rf.y.lo, rf.x.hi - rf.x.lo))) + 1


def default_side(m: Any, rf: int) -> tuple[int, int]:
    """About twice the receptive field, between the default bounds and never above the model's input."""
    side = max(DEFAULT_MIN_SIDE, 16 * math.ceil(2 * rf / 16))
    side = min(side, DEFAULT_MAX_SIDE, max(int(m.input_size[0]), int(m.input_size[1])))
    return int(side), int(side)


def resolve_size(size: Any) -> Optional[tuple[int, int]]:
    """``size`` (pixels, or (height, width), or None) checked: ``(h, w)`` or None."""
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        h, w = (int(v) for v in size)
    else:
        raise InputError(f"size must be a number of pixels or (height, width), not {size!r}.")
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise InputError(f"size must lie between {MIN_SIDE} and {MAX_SIDE} pixels, not {h}x{w}.")
    return h, w


def _cell(cell: Any) -> Optional[tuple[int, int]]:
    return None if cell is None else (int(cell[0]), int(cell[1]))


@op("featvis.plan")
def _plan_op(m: Any, batch: Optional[np.ndarray], *, layer: str, size: Optional[list] = None,
             cell: Optional[list] = None) -> dict:
    """Image size (default from the receptive field), the canvas and how many channels fit one batch."""
    require_safe_gradients()
    from vizlib.layers import find_layer

    info = find_layer(m, layer)
    cell_t = check_cell(m, layer, cell)
    rf = receptive_field(m, layer)
    if cell_t is not None:  # one position of the map: the whole input it lives in
        hw = resolve_size(size) or resolve_size([min(MAX_SIDE, max(MIN_SIDE, int(v))) for v in m.input_size[:2]])
    else:
        hw = resolve_size(size) or default_side(m, rf)
    g = graph(m, layer, hw, cell_t)
    per_row = bytes_per_row(m, layer, g)
    return {"size": list(hw), "receptive_field": rf, "canvas": list(g.canvas), "free_size": g.free_size,
            "batch": int(max(1, min(MAX_CHANNELS, BATCH_BYTES // per_row))), "layer_channels": info.channels}


@op("featvis.optimise")
def _optimise_op(m: Any, batch: Optional[np.ndarray], *, layer: str, channels: list, size: list, steps: int,
                 seed: int, job: str, advance: Optional[int] = None, cell: Optional[list] = None,
                 preview: bool = False, method: str = "default") -> dict:
    """Advance one optimisation by ``advance`` steps (all when None); its state stays in this process.

    Returns ``done`` and ``steps``; with ``preview``, while running, the
    current ``preview`` images; once done, ``images`` (uint8 (B, H, W, C))
    and ``stats`` (float32 (B, len(STATS), layer channels): each image's
    statistics of every channel's map, see :data:`STATS`).
    """
    require_safe_gradients()
    chosen = check_layer_channels(m, layer, channels)
    hw = resolve_size(size)
    steps = int(steps)
    if not 1 <= steps <= MAX_STEPS:
        raise InputError(f"steps must lie between 1 and {MAX_STEPS}, not {steps}.")
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}.")
    st = _state(m, str(job), layer, chosen, hw, steps, int(seed), check_cell(m, layer, cell), bool(preview),
                PLAIN if method == "plain" else None)
    if advance is None:
        st.run()
    else:
        st.advance(int(advance))
    out: dict = {"done": st.done, "steps": st.steps, "ran": st.ran, "sketching": st.sketch_running}
    if st.done >= st.steps:
        out["images"], out["stats"] = st.finish()
        with _STATES_LOCK:
            _STATES.pop(str(job), None)
    elif preview:
        out["preview"] = st.preview()
    return out


@op("featvis.cancel")
def _cancel_op(m: Any, batch: Optional[np.ndarray], *, job: str) -> dict:
    """Forget an optimisation (the page moved on)."""
    with _STATES_LOCK:
        return {"dropped": _STATES.pop(str(job), None) is not None}
