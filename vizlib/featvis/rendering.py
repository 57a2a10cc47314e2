"""The public calls: :func:`render` and :func:`feature_visualization` (Lucid's ``render``).

A render checks its arguments, asks the model's side for a plan (image size,
batch size), takes finished channels from the disk cache, optimises the rest
in as few batches as memory allows, a few steps per call (progress and
cancelling between calls), and returns the images with what each does to
every channel of the layer (:class:`FeatureVisualization`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from vizlib.arguments import check_seed
from vizlib.errors import InputError
from vizlib.featvis.cache import DiskCache
from vizlib.featvis.engine import (
    DEFAULT_STEPS, MAX_CHANNELS, MAX_STEPS, METHODS, STATS, check_cell, check_layer_channels, resolve_size,
)
from vizlib.featvis.score import reference

#: Bump when the algorithm changes: it is part of every cache key.
ALGORITHM = "fv2.4"  # fv2.4: convergence judged on full-rate windows only (benchmarks/README.md, round 5)

ProgressFn = Callable[[int, int], None]


@dataclass
class FeatureVisualization:
    """Images made for channels of one layer, and what each image does to every channel of that layer.

    ``images[i]`` was optimised for ``channels[i]``. ``stats[name][i, d]`` is a
    statistic of channel ``d``'s map on ``images[i]``: ``"mean"`` (mean
    activation), ``"fired"`` (mean of its positive part), ``"activity"`` (mean
    absolute activation, how the dashboard ranks channels), ``"peak"`` (max),
    ``"floor"`` (min).
    """

    model_key: str
    layer: str
    channels: list[int]
    images: np.ndarray  # uint8 (K, H, W, C)
    stats: dict[str, np.ndarray]  # name -> float32 (K, layer channels)
    size: tuple[int, int]
    steps: int
    seed: int
    cached: list[bool] = field(default_factory=list)  # which came from the disk cache
    #: Per channel of the layer: the most a real image excites it (:func:`vizlib.featvis.score.reference`).
    reference: Optional[np.ndarray] = None
    cell: Optional[tuple[int, int]] = None  # the neuron objective's map position, or None: whole channels
    method: str = "default"  # "default" (this project's method) or "plain" (plain gradient ascent, the baseline)

    def own(self, stat: str = "mean") -> np.ndarray:
        """``stat`` of each image's own channel: float32 (K,)."""
        arr = self.stats[stat]
        return arr[np.arange(len(self.channels)), self.channels]

    def rank(self, stat: str = "fired") -> list[int]:
        """Rank of each image's own channel among the layer's channels by ``stat`` (1: the highest)."""
        arr = self.stats[stat]
        own = self.own(stat)
        return [1 + int(np.sum(arr[i] > own[i])) for i in range(len(self.channels))]

    def vs_samples(self) -> Optional[np.ndarray]:
        """Each image's activation of its channel relative to the strongest real image's (None: no reference)."""
        if self.reference is None:
            return None
        ref = np.asarray(self.reference, np.float64)[self.channels]
        return (self.own("fired").astype(np.float64) / np.maximum(ref, 1e-6)).astype(np.float32)

    def failed(self) -> list[bool]:
        """True where the image is not its channel's (another channel fires more on it: rank > 1), or a
        real image excites the channel more (:meth:`vs_samples` < 1), or nothing moves the channel."""
        vs = self.vs_samples()
        ranks = self.rank("fired")
        flat = self.flat()
        return [bool(flat[i] or ranks[i] != 1 or (vs is not None and vs[i] < 1.0)) for i in range(len(self.channels))]

    def flat(self) -> list[bool]:
        """True where the channel's map stays constant on its own image: nothing found that moves it.

        A channel whose kernel is all zeros (the bundled model's first layer has
        two) or a ReLU channel that never switches on has no pattern to show.
        """
        peak, floor = self.own("peak"), self.own("floor")
        scale = np.maximum(1.0, np.abs(peak))
        return [bool(v) for v in (peak - floor) <= 1e-6 * scale]


class Cancelled(Exception):
    """A render stopped by its caller (``should_stop`` returned True)."""


_PLANS: "OrderedDict[tuple, dict]" = OrderedDict()
_PLANS_LOCK = threading.Lock()


def _plan(m: Any, layer: str, size: Optional[tuple[int, int]], cell: Optional[tuple[int, int]] = None) -> dict:
    # What a plan says (sizes, batch) depends on the architecture, not the weights: the model's key will do.
    from vizlib.layers import find_layer

    key = (str(m.key), m.preprocess_name, tuple(m.input_size), layer, find_layer(m, layer).output_shape,
           len(m.layers), size, cell)
    with _PLANS_LOCK:
        found = _PLANS.get(key)
        if found is not None:
            return found
    plan = m.run("featvis.plan", None, layer=layer, size=None if size is None else list(size),
                 cell=None if cell is None else list(cell))
    try:
        checked = {"size": (int(plan["size"][0]), int(plan["size"][1])), "batch": max(1, int(plan["batch"])),
                   "layer_channels": int(plan["layer_channels"]), "canvas": [int(v) for v in plan["canvas"]],
                   "free_size": bool(plan["free_size"]), "receptive_field": int(plan["receptive_field"])}
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputError("The model's process sent a reply the dashboard can't read.") from exc
    with _PLANS_LOCK:
        _PLANS[key] = checked
        while len(_PLANS) > 256:
            _PLANS.popitem(last=False)
    return checked


def cache_key(m: Any, digest: str, layer: str, channel: int, size: tuple[int, int], steps: int, seed: int,
              cell: Optional[tuple[int, int]] = None, method: str = "default") -> str:
    """The disk cache's key of one channel's visualisation (the same for the page, the CLI and the atlas)."""
    parts = [ALGORITHM, digest, m.preprocess_name, list(m.input_size), int(m.channels), layer, int(channel),
             list(size), int(steps), int(seed)]
    if cell is not None:
        parts.append(["cell", int(cell[0]), int(cell[1])])
    if method != "default":
        parts.append(["method", str(method)])
    return DiskCache.key(*parts)


def check_method(method: Any) -> str:
    """``method`` if it names one of :data:`~vizlib.featvis.engine.METHODS`, else :class:`InputError`."""
    if not isinstance(method, str) or method not in METHODS:
        raise InputError(f"method must be one of {', '.join(repr(k) for k in METHODS)}, not {method!r}.")
    return method


def render(model: Any, layer: str, channels: Sequence[int], *, size: Any = None, steps: Optional[int] = None,
           seed: int = 0, cache: "bool | DiskCache | None" = True, progress: Optional[ProgressFn] = None,
           should_stop: Optional[Callable[[], bool]] = None, cell: Any = None, score: bool = True,
           reference_images: Optional[Sequence[Any]] = None,
           preview: Optional[Callable[[list[int], np.ndarray], None]] = None,
           method: str = "default") -> FeatureVisualization:
    """Feature visualisations of ``channels`` of ``layer``, with what each does to the whole layer.

    Like :func:`feature_visualization`, plus: ``cache`` (True: the default
    :class:`DiskCache`; a ``DiskCache``; False/None: compute afresh),
    ``progress(steps done, steps in all)`` after every few steps, and
    ``should_stop()``, polled between chunks of steps (True raises
    :class:`Cancelled`). Channels missing from the cache are optimised
    together, in as few batches as memory allows. ``cell`` (row, col) of the
    layer's map: optimise that one position (a neuron) instead of the whole
    map. ``score``: attach the reference of real images
    (``reference_images``, default the bundled samples), so the result says
    how strong each image is and whether it failed
    (:meth:`FeatureVisualization.failed`). ``preview(channels, images)`` is
    called with the images as they are after every chunk of steps (a page
    shows them while it waits). ``method``: ``"default"``, or ``"plain"``
    for plain gradient ascent (pixels from flat grey, no transforms: the
    literature's baseline), to compare on the same channel and steps.
    """
    from vizlib.contract import as_model

    method = check_method(method)
    seed = check_seed(seed)
    m = as_model(model)
    steps = DEFAULT_STEPS if steps is None else int(steps)
    if not 1 <= steps <= MAX_STEPS:
        raise InputError(f"steps must lie between 1 and {MAX_STEPS}, not {steps}.")
    wanted = check_layer_channels(m, layer, channels)
    if len(set(wanted)) > MAX_CHANNELS:
        raise InputError(f"At most {MAX_CHANNELS} channels at a time.")
    hw = resolve_size(size)
    cell_t = check_cell(m, layer, cell)
    plan = _plan(m, layer, hw, cell_t)
    hw, layer_channels = plan["size"], plan["layer_channels"]
    store = DiskCache() if cache is True else (cache or None)
    shape = (hw[0], hw[1], int(m.channels))
    unique = list(dict.fromkeys(wanted))
    found: dict[int, tuple[np.ndarray, np.ndarray, bool]] = {}
    keys: dict[int, str] = {}
    if store is not None:
        digest = m.weights_digest()
        keys = {c: cache_key(m, digest, layer, c, hw, steps, seed, cell_t, method) for c in unique}
        for c in unique:
            hit = store.get(keys[c], shape, layer_channels)
            if hit is not None:
                found[c] = (hit[0], hit[1], True)
    missing = [c for c in unique if c not in found]
    total = steps * len(unique)
    done_before = steps * (len(unique) - len(missing))
    if progress:
        progress(done_before, total)
    for start in range(0, len(missing), plan["batch"]):
        chunk = missing[start:start + plan["batch"]]
        images, stats = _optimise(m, layer, chunk, hw, steps, seed, progress=(
            None if progress is None else
            (lambda d, _t, base=done_before + steps * start, k=len(chunk): progress(base + d * k, total))),
            should_stop=should_stop, cell=cell_t, method=method,
            preview=None if preview is None else (lambda imgs, ch=chunk: preview(ch, imgs)))
        for i, c in enumerate(chunk):
            found[c] = (images[i], stats[i], False)
            if store is not None:
                store.put(keys[c], images[i], stats[i])
    order = [found[c] for c in wanted]
    stats_all = np.stack([o[1] for o in order])  # (K, len(STATS), layer channels)
    return FeatureVisualization(
        model_key=str(getattr(m, "key", "")), layer=layer, channels=list(wanted),
        images=np.stack([o[0] for o in order]),
        stats={name: np.ascontiguousarray(stats_all[:, k, :]) for k, name in enumerate(STATS)},
        size=hw, steps=steps, seed=int(seed), cached=[o[2] for o in order], cell=cell_t, method=method,
        reference=reference(m, layer, reference_images, cell_t) if score else None)


#: Seconds one call of the optimisation should take, so progress moves and a cancel is heard.
CHUNK_SECONDS = 0.5


def _optimise(m: Any, layer: str, channels: list[int], size: tuple[int, int], steps: int, seed: int, *,
              progress: Optional[ProgressFn] = None, should_stop: Optional[Callable[[], bool]] = None,
              cell: Optional[tuple[int, int]] = None, preview: Optional[Callable[[np.ndarray], None]] = None,
              method: str = "default") -> tuple[np.ndarray, np.ndarray]:
    """Run one batch of channels to the end, a few steps per call, where the model lives."""
    job = uuid.uuid4().hex
    advance, done, restarts = 4, 0, 0
    params = dict(layer=layer, channels=[int(c) for c in channels], size=list(size), steps=int(steps),
                  seed=int(seed), job=job, cell=None if cell is None else list(cell))
    if method != "default":  # (a model process of an older vizlib would refuse the unknown argument)
        params["method"] = method
    try:
        while True:
            if should_stop is not None and should_stop():
                raise Cancelled()
            t0 = time.perf_counter()
            r = m.run("featvis.optimise", None, advance=int(advance), preview=preview is not None, **params)
            spent = time.perf_counter() - t0
            now = int(r.get("done", -1))
            if now < done:  # the model's process started afresh and lost the state: it restarts from 0
                restarts += 1
                if restarts > 2:
                    raise InputError("The model's process keeps stopping during feature visualisation; "
                                     "try fewer channels or fewer steps.")
            done = now
            if progress is not None:
                progress(min(done, steps), steps)
            shown = r.get("preview")
            if preview is not None and isinstance(shown, np.ndarray) and shown.dtype == np.uint8 \
                    and shown.shape == (len(channels), size[0], size[1], int(m.channels)):
                preview(shown)
            if done >= steps:
                images, stats = r.get("images"), r.get("stats")
                k = len(channels)
                if (not isinstance(images, np.ndarray) or images.dtype != np.uint8
                        or images.shape != (k, size[0], size[1], int(m.channels))
                        or not isinstance(stats, np.ndarray) or stats.ndim != 3 or stats.shape[:2] != (k, len(STATS))):
                    raise InputError("The model's process sent a reply the dashboard can't read.")
                return images, stats.astype(np.float32, copy=False)
            per_step = spent / max(1, advance)
            advance = int(max(1, min(64, CHUNK_SECONDS / max(per_step, 1e-4))))
    except BaseException:
        try:
            m.run("featvis.cancel", None, job=job)
        except Exception:  # noqa: BLE001 - best effort: the state is evicted anyway
            pass
        raise


def feature_visualization(model: Any, layer: str, channels: Sequence[int], *, size: Any = None,
                          steps: Optional[int] = None, seed: int = 0, cell: Any = None,
                          method: str = "default") -> np.ndarray:
    """Images that excite ``channels`` of ``layer`` most: uint8 ``(len(channels), H, W, C)``.

    ``model`` is anything :func:`vizlib.load_model` accepts or returns (an
    uploaded model computes in its own process); ``C`` is the model's input
    channels (1 or 3). ``H x W`` is ``size`` (pixels, or ``(height, width)``),
    by default about twice the layer's receptive field, between 64 and 128
    pixels and at most the model's input size. ``steps`` of optimisation
    (default :data:`DEFAULT_STEPS`); the same ``seed`` gives the same images.
    Finished images are cached on disk (:class:`DiskCache`); :func:`render`
    gives more control, the statistics of every channel and the scores.
    ``cell=(row, col)``: what makes that one position of the map fire (a
    neuron), at the model's input size unless ``size`` says otherwise.
    ``method="plain"``: plain gradient ascent instead (pixels from flat grey,
    no transforms), the literature's baseline, to compare against.
    """
    return render(model, layer, channels, size=size, steps=steps, seed=seed, cell=cell, score=False,
                  method=method).images


def default_size(model: Any, layer: str) -> tuple[int, int]:
    """The image size :func:`feature_visualization` uses for ``layer`` when given none."""
    from vizlib.contract import as_model

    m = as_model(model)
    return _plan(m, layer, None)["size"]
