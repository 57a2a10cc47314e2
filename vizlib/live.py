"""The camera as a live stream: one RGB frame in, one composed RGB frame out.

A :class:`FrameProcessor` takes a camera frame (``uint8 (H, W, 3)``) and returns
the frame the visitor sees: the camera picture (optionally with the Grad-CAM
of the top class over it), the channel grids of two layers (first and last conv
by default) and the top-5 prediction as text bars, all drawn into pixels here.
Per-frame pictures go into the video, never through a page rerun: a rerun with
Plotly charts costs more than a frame (DESIGN.md, "Live streams").

Everything goes through the project's single path for each step: the frame
becomes the model's input by the model's own ``raw_batch`` + preprocessing (the
one model view); the model work is one operation, ``live.frame``
(:mod:`vizlib.ops`: it runs where the model lives, so an uploaded model streams
from its own process), which calls one traced ``tf.function`` per (model,
layers, Grad-CAM on/off): the cached multi-output extractor gives both layers
and the prediction in one forward pass, and the Grad-CAM gradient is taken from
that same pass at the final feature map, the model cut there as
:mod:`vizlib.explain.cam` cuts it (tests hold it to :func:`vizlib.explain.gradcam`).
The grids are :func:`vizlib.figures.mosaic`, drawn at the size they are shown.

Bounded and drop-not-queue:

* :class:`LatestFrame` holds at most one pending frame; a newer one replaces it
  (the picture never drifts behind the person).
* :class:`StreamSlots` caps the live streams per process
  (``CNN_VIZ_LIVE_STREAMS``); a stream beyond it is refused with
  :data:`LIMIT_MESSAGE` and the page offers the snapshot camera.

Nothing here needs Streamlit or WebRTC; ``ui/live.py`` wires it to
streamlit-webrtc.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from vizlib import permodel
from vizlib.errors import InputError
from vizlib.export import slide_font
from vizlib.ops import op

#: Composed frame size (width, height): 16:9, readable on a projector.
SIZE = (960, 540)
PRESENTER_SIZE = (1280, 720)
#: Channels shown per grid (the first N, or N around the stepped channel).
GRID_CHANNELS = 16
#: Largest camera frame accepted (pixels per side): a 4K webcam is scaled down by the browser anyway.
MAX_FRAME_SIDE = 4096
BACKGROUND = (20, 24, 31)
#: The grids' gaps and empty cells: a step lighter than the frame, so the cells read as a grid, not white holes.
GRID_GAPS = (48, 54, 64)
TEXT = (235, 238, 242)
DIM = (150, 158, 170)
BAR = (76, 140, 212)
HIGHLIGHT = (255, 200, 40)
LIMIT_MESSAGE = ("The live view is full: {n} live streams are running on this server, its limit "
                 "(CNN_VIZ_LIVE_STREAMS). Use the snapshot camera below, or try again when a stream stops.")


def check_frame(frame: Any) -> np.ndarray:
    """A camera frame as ``uint8 (H, W, 3)``; anything else -> :class:`InputError` saying what came."""
    if not isinstance(frame, np.ndarray):
        raise InputError(f"A live frame must be a numpy array, got {type(frame).__name__}.")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise InputError(f"A live frame must be RGB uint8 of shape (H, W, 3), got {frame.dtype} {frame.shape}.")
    h, w = frame.shape[:2]
    if not (1 <= h <= MAX_FRAME_SIDE and 1 <= w <= MAX_FRAME_SIDE):
        raise InputError(f"A live frame must be 1 to {MAX_FRAME_SIDE} pixels per side, got {w}×{h}.")
    return frame


@dataclass
class LiveFrame:
    """One processed frame: the composed picture and what it shows."""

    image: np.ndarray  # uint8 (H, W, 3), the frame the visitor sees
    top: list[tuple[int, str, float]]  # (class index, name, probability), best first
    layers: tuple[str, ...]
    channel: int  # the stepped channel (highlighted in the grids)
    class_index: Optional[int]  # the class whose Grad-CAM is drawn (None: no Grad-CAM)
    seconds: dict[str, float] = field(default_factory=dict)  # time per step, for benchmarks


class LatestFrame:
    """A one-frame mailbox: :meth:`put` replaces what is waiting, :meth:`take` gets the newest.

    What a slow consumer never sees is counted in :attr:`dropped`; nothing queues.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._has = False
        self._closed = False
        self.dropped = 0
        self.taken = 0

    def put(self, item: Any) -> None:
        """Offer ``item``; a frame still waiting is dropped in its favour."""
        with self._cond:
            if self._has:
                self.dropped += 1
            self._item, self._has = item, True
            self._cond.notify()

    def take(self, timeout: Optional[float] = None) -> Any:
        """The newest item (waiting up to ``timeout`` s for one); None when closed or timed out."""
        with self._cond:
            if not self._has and not self._closed:
                self._cond.wait(timeout)
            if not self._has:
                return None
            item, self._item, self._has = self._item, None, False
            self.taken += 1
            return item

    def close(self) -> None:
        """Drop what waits and wake any consumer (it gets None)."""
        with self._cond:
            self._item, self._has, self._closed = None, False, True
            self._cond.notify_all()


class StreamSlots:
    """At most ``limit`` live streams per process; :meth:`acquire` says whether one more may start."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, int(limit))
        self._lock = threading.Lock()
        self._owners: set[str] = set()

    def acquire(self, owner: str) -> bool:
        """Take a slot for ``owner`` (idempotent); False when all are taken."""
        with self._lock:
            if owner in self._owners:
                return True
            if len(self._owners) >= self.limit:
                return False
            self._owners.add(owner)
            return True

    def release(self, owner: str) -> None:
        """Give ``owner``'s slot back (no-op if it has none)."""
        with self._lock:
            self._owners.discard(owner)

    @property
    def in_use(self) -> int:
        with self._lock:
            return len(self._owners)

    def full(self) -> bool:
        return self.in_use >= self.limit

    def message(self) -> str:
        """What the visitor beyond the limit is told."""
        return LIMIT_MESSAGE.format(n=self.limit)


_SLOTS: Optional[StreamSlots] = None
_SLOTS_LOCK = threading.Lock()


def stream_slots() -> StreamSlots:
    """This process's stream slots, sized by ``CNN_VIZ_LIVE_STREAMS`` when first asked for."""
    global _SLOTS
    with _SLOTS_LOCK:
        if _SLOTS is None:
            from vizlib.settings import live_streams

            _SLOTS = StreamSlots(live_streams())
        return _SLOTS


def _fit(img: Image.Image, box: tuple[int, int], resample: int = Image.BILINEAR) -> Image.Image:
    """``img`` scaled to fit ``box`` = (width, height), aspect kept."""
    bw, bh = box
    s = min(bw / img.width, bh / img.height)
    size = (max(1, int(img.width * s)), max(1, int(img.height * s)))
    return img if size == img.size else img.resize(size, resample)


class FrameProcessor:
    """Camera frame -> composed frame with the top-5, two channel grids and optionally Grad-CAM.

    ``layers`` are the two layers shown (default: first and last conv);
    ``channel`` is highlighted in the grids and the grid pages to it;
    ``gradcam`` overlays where the model looked for ``class_index``
    (None: the top class). The settings may be changed between frames from
    another thread (the page's widgets); each frame reads them once.
    """

    def __init__(self, model: Any, *, layers: Optional[Sequence[str]] = None, channel: int = 0,
                 gradcam: bool = False, class_index: Optional[int] = None, colormap: str = "viridis",
                 presenter: bool = False, grid_channels: int = GRID_CHANNELS, cam_opacity: float = 0.45) -> None:
        from vizlib.contract import as_model
        from vizlib.figures import colormap_lut
        from vizlib.layers import first_conv, last_conv, spatial_layers

        self.model = as_model(model)
        self.choices = tuple(i.name for i in spatial_layers(self.model))
        self.layers = tuple(layers) if layers else (first_conv(self.model).name, last_conv(self.model).name)
        for name in self.layers:
            if name not in self.choices:
                raise InputError(f"Layer '{name}' has no maps to show live. Pick one of: {', '.join(self.choices)}.")
        colormap_lut(colormap)  # unknown names fail here, not in the stream
        self.channel = int(channel)
        self.gradcam = bool(gradcam)
        self.class_index = class_index
        self.colormap = colormap
        self.presenter = bool(presenter)
        self.grid_channels = max(1, int(grid_channels))
        self.cam_opacity = float(cam_opacity)
        self.frames = 0
        self.last: Optional[LiveFrame] = None

    # -- stepping (presenter keys) --------------------------------------------------------
    def step_layer(self, delta: int) -> str:
        """Move the second grid's layer by ``delta`` through the model's spatial layers."""
        i = self.choices.index(self.layers[-1]) if self.layers[-1] in self.choices else 0
        name = self.choices[(i + delta) % len(self.choices)]
        self.layers = (*self.layers[:-1], name)
        self.channel = 0
        return name

    def step_channel(self, delta: int) -> int:
        """Move the highlighted channel by ``delta`` (wraps within the last grid's layer)."""
        from vizlib.layers import find_layer

        n = int(find_layer(self.model, self.layers[-1]).output_shape[-1])
        self.channel = (self.channel + int(delta)) % max(1, n)
        return self.channel

    def step_class(self, delta: int) -> Optional[int]:
        """Grad-CAM of the next / previous class (from the top class when none is picked)."""
        n = len(self.model.class_names or []) or None
        if n is None:
            return self.class_index
        start = self.class_index if self.class_index is not None else (self.last.top[0][0] if self.last else 0)
        self.class_index = (start + int(delta)) % n
        self.gradcam = True
        return self.class_index

    # -- one frame --------------------------------------------------------------------------
    def process(self, frame: np.ndarray) -> LiveFrame:
        """Compose the visitor's frame for one camera frame (uint8 RGB in, uint8 RGB out)."""
        from vizlib.extract import ranked_classes
        from vizlib.layers import find_layer

        frame = check_frame(frame)
        layers, channel, cls = self.layers, self.channel, self.class_index
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        pil = Image.fromarray(frame, mode="RGB")
        last_channels = int(find_layer(self.model, layers[-1]).output_shape[-1])
        channel = int(channel) % max(1, last_channels)
        picks = [self._picked(int(find_layer(self.model, name).output_shape[-1]),
                              channel if k == len(layers) - 1 else None) for k, name in enumerate(layers)]
        want_cam = self.gradcam and self.model.is_classifier
        batch = self.model.raw_batch([pil])  # the one model view (resize, greyscale), as every view sees it
        seconds["prepare"] = time.perf_counter() - t0
        r = self.model.run("live.frame", batch, layers=list(layers), channels=picks, gradcam=bool(want_cam),
                           class_index=None if cls is None else int(cls))
        output = r.get("output")
        top = (ranked_classes(self.model, output, 5)[0]
               if isinstance(output, np.ndarray) and self.model.is_classifier else [])
        t1 = time.perf_counter()
        seconds["forward"] = t1 - t0
        cam = r.get("cam") if want_cam and top else None
        cam_class = int(r["class_index"]) if cam is not None else None
        grids = [self._grid(r[f"maps:{k}"], pick) for k, pick in enumerate(picks)]
        image = self._compose(frame, cam, grids, layers, top, channel, cam_class)
        seconds["draw"] = time.perf_counter() - t1
        self.frames += 1
        self.last = LiveFrame(image=image, top=top, layers=tuple(layers), channel=channel,
                              class_index=cam_class, seconds=seconds)
        return self.last

    def close(self) -> None:
        """Forget the last frame (the stream stopped; its pictures go with it)."""
        self.last = None

    # -- drawing ------------------------------------------------------------------------------
    def _picked(self, c: int, channel: Optional[int]) -> list[int]:
        """The up to ``grid_channels`` channels a grid shows: the first ones, or the page holding ``channel``."""
        k = min(self.grid_channels, c)
        start = 0 if channel is None else (int(channel) % c // k) * k
        return list(range(start, min(c, start + k)))

    def _grid_box(self, n_grids: int) -> tuple[int, int]:
        """(width, height) each grid is drawn into, at the composed frame's size."""
        W, H = PRESENTER_SIZE if self.presenter else SIZE
        s = W / SIZE[0]
        pad = int(8 * s)
        return W - W // 2 - pad, (H - pad) // max(1, n_grids) - int(22 * s) - pad

    def _grid(self, maps: np.ndarray, picked: list[int]) -> tuple[np.ndarray, dict, list[int]]:
        """(H, W, k) maps of the ``picked`` channels -> their mosaic, drawn at its size in the frame.

        :func:`vizlib.figures.mosaic` with the largest cell that fits the grid's box, so the
        maps are colour-mapped once at the output size (never drawn big and shrunk again).
        """
        from vizlib.figures import GAP_PX, mosaic

        h, w = maps.shape[:2]
        k = len(picked)
        box_w, box_h = self._grid_box(len(self.layers))
        cols = max(1, math.ceil(math.sqrt(k)))
        rows = math.ceil(k / cols)
        side = max(h, w)
        fit_w = (box_w - (cols + 1) * GAP_PX) / cols * side / w
        fit_h = (box_h - (rows + 1) * GAP_PX) / rows * side / h
        cell = max(1, int(min(fit_w, fit_h)))
        canvas, geo = mosaic(np.moveaxis(maps, -1, 0), colormap=self.colormap, cell_px=cell, background=GRID_GAPS)
        return canvas, geo, picked

    def _compose(self, frame: np.ndarray, cam: Optional[np.ndarray], grids: list, layers: Sequence[str],
                 top: list, channel: int, cam_class: Optional[int]) -> np.ndarray:
        from vizlib.figures import cell_origin, colormap_lut

        W, H = PRESENTER_SIZE if self.presenter else SIZE
        s = W / SIZE[0]
        pad, title = int(8 * s), int(18 * s)
        out = Image.new("RGB", (W, H), BACKGROUND)
        draw = ImageDraw.Draw(out)
        small, big = slide_font(title), slide_font(int(22 * s))
        # Left: the camera (Grad-CAM over it), then the top-5 bars.
        left_w = W // 2 - pad
        cam_box = (left_w - pad, int(H * 0.62))
        shown = _fit(Image.fromarray(frame, mode="RGB"), cam_box)
        if cam is not None:
            # The map at the final feature map's size, scaled once straight to the panel (bilinear, as
            # Grad-CAM's own upsampling), then coloured: no detour through the model's input size.
            up = np.asarray(Image.fromarray(np.asarray(cam, dtype=np.float32), mode="F")
                            .resize(shown.size, Image.BILINEAR))
            index = np.clip(np.rint(up * 255), 0, 255).astype(np.uint8)
            heat = Image.fromarray(colormap_lut("turbo")[index], mode="RGB")
            shown = Image.blend(shown, heat, self.cam_opacity)
        out.paste(shown, (pad, pad))
        y = pad + shown.height + pad
        if cam_class is not None:
            draw.text((pad, y), f"Grad-CAM: {self._name(cam_class)}", fill=HIGHLIGHT, font=small)
            y += title + pad // 2
        row = max(int(14 * s), (H - y - pad) // 5)
        font = slide_font(min(int(row * 0.7), int(30 * s)))
        bar_x, bar_w = pad + int(left_w * 0.45), left_w - int(left_w * 0.45) - pad
        for i, (_, name, p) in enumerate(top[:5]):
            yy = y + i * row
            draw.text((pad, yy), f"{name[:22]}", fill=TEXT if i == 0 else DIM, font=font)
            draw.rectangle((bar_x, yy + 2, bar_x + max(1, int(bar_w * float(p))), yy + row - 4),
                           fill=BAR if i else HIGHLIGHT)
            draw.text((bar_x + 4, yy), f"{p:.0%}", fill=BACKGROUND if i == 0 and p > 0.15 else TEXT, font=font)
        # Right: one grid per layer, stacked, each drawn at its size (no resampling here).
        x0 = W // 2
        box_h = self._grid_box(len(grids))[1]
        y = pad
        for name, (canvas, geo, picked) in zip(layers, grids):
            label = f"{name}: channels {picked[0]}-{picked[-1]}"
            draw.text((x0, y), label, fill=TEXT, font=big if self.presenter else small)
            y += (int(22 * s) if self.presenter else title) + pad // 2
            out.paste(Image.fromarray(canvas, mode="RGB"), (x0, y))
            if channel in picked and name == layers[-1]:
                cy, cx = cell_origin(picked.index(channel), geo["cols"], geo["cell"])
                ch, cw = geo["cell"]
                draw.rectangle((x0 + cx - 2, y + cy - 2, x0 + cx + cw + 1, y + cy + ch + 1),
                               outline=HIGHLIGHT, width=max(2, int(2 * s)))
            y += box_h + pad
        return np.asarray(out, dtype=np.uint8)

    def _name(self, index: int) -> str:
        names = self.model.class_names or []
        return names[index] if 0 <= index < len(names) else f"class {index}"


# --------------------------------------------------------------------------- the per-frame model step
#: Traced per-frame steps kept per model (one per layer pair and Grad-CAM on/off).
MAX_STEPS_PER_MODEL = 8


def _step(m: Any, layers: tuple[str, ...], gradcam: bool) -> Any:
    """One traced ``tf.function`` per (model, layers, Grad-CAM): frame batch -> everything a frame shows.

    It calls the cached multi-output model once (the grids' layers and the model's
    output come out of the same forward pass) and, with Grad-CAM, takes the class
    score's gradient at the final feature map from that same pass: the model is cut
    there as :mod:`vizlib.explain.cam` cuts it (its trunk's outputs are outputs of
    the one extractor, its head runs on them under the tape), so nothing runs twice.
    Traced once: per frame no Python walks the layers (eager Keras spent most of a
    small model's frame doing that).
    """
    km = m.model

    def build() -> Any:
        import tensorflow as tf

        from vizlib.extract import extractor, final_output
        from vizlib.layers import trace

        tr = trace(km)
        names = list(dict.fromkeys(layers))
        outs = [tr.outputs[n] for n in names]
        h, w = m.input_size
        spec = [tf.TensorSpec([1, h, w, m.channels], tf.float32)] + [tf.TensorSpec([None], tf.int32)] * len(layers)
        at = [names.index(n) for n in layers]
        if not gradcam:
            with_pred = len(km.outputs) == 1  # a model of several outputs has no one prediction to rank
            extra = [final_output(m)] if with_pred else []
            ext = extractor(m, outs + extra, ("forward", tuple(names), with_pred))  # shared with forward()

            @tf.function(input_signature=spec, reduce_retracing=True)
            def plain(x, *picks):
                res = ext(x, training=False)
                res = list(res) if isinstance(res, (list, tuple)) else [res]
                maps = [tf.gather(res[i][0], p, axis=-1) for i, p in zip(at, picks)]
                return maps, (res[-1] if with_pred else tf.zeros([0], tf.float32))

            return plain

        from vizlib.explain.cam import class_scores, feature_tensors, final_feature_map_name

        cut = final_feature_map_name(m)  # the model cut where Grad-CAM cuts it (vizlib.explain.cam)
        ext = extractor(m, outs + feature_tensors(m, cut), ("live.gradcam", tuple(names), cut))

        @tf.function(input_signature=spec + [tf.TensorSpec([], tf.int32)], reduce_retracing=True)
        def with_cam(x, *args):
            picks, cls = args[:-1], args[-1]
            res = ext(x, training=False)
            feats = list(res[len(names):])
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(feats[0])
                logits = class_scores(m, feats, layer=cut)  # Grad-CAM's class score, from these features
                chosen = tf.where(cls >= 0, cls, tf.argmax(logits[0], output_type=tf.int32))
                target = tf.gather(logits[0], chosen)
            g = tape.gradient(target, feats[0])
            weights = tf.reduce_mean(g, axis=[1, 2])  # Grad-CAM: channels weighted by their mean gradient
            raw = tf.nn.relu(tf.einsum("nhwk,nk->nhw", feats[0], weights))[0]
            return [tf.gather(res[i][0], p, axis=-1) for i, p in zip(at, picks)], logits, raw, chosen

        return with_cam

    return permodel.cached(km, _STEPS, (tuple(layers), bool(gradcam)), build, max_entries=MAX_STEPS_PER_MODEL)


_STEPS = permodel.Slot("live.steps")


@op("live.frame")
def _frame_op(m: Any, batch: np.ndarray, *, layers: Sequence[str], channels: Sequence[Sequence[int]],
              gradcam: bool = False, class_index: Optional[int] = None) -> dict:
    """One camera frame's model work, where the model lives: the picked channels of each layer, the
    model's output and (``gradcam``) the Grad-CAM of ``class_index`` (None: the top class), normalised
    to [0, 1] at the final feature map's size."""
    from vizlib.extract import run_lock
    from vizlib.layers import find_layer

    if batch is None or len(batch) != 1:
        raise InputError("A live frame is one image.")
    layers = tuple(str(n) for n in layers)
    if len(channels) != len(layers) or not layers:
        raise InputError("Give one list of channels per layer.")
    picks = []
    for name, chans in zip(layers, channels):
        c = int(find_layer(m, name).output_shape[-1])
        idx = np.asarray([int(i) for i in chans], dtype=np.int32)
        if not len(idx) or idx.min() < 0 or idx.max() >= c:
            raise InputError(f"Layer '{name}' has channels 0 to {c - 1}.")
        picks.append(idx)
    if gradcam:
        from vizlib.explain.safety import check_gradients_safe

        check_gradients_safe()
        n = int(m.model.outputs[0].shape[-1])
        if class_index is not None and not 0 <= int(class_index) < n:
            raise InputError(f"Class index {class_index} is out of range: this model has classes 0 to {n - 1}.")
    step = _step(m, layers, bool(gradcam))
    args = [np.ascontiguousarray(batch, dtype=np.float32), *picks]
    if gradcam:
        args.append(np.int32(-1 if class_index is None else int(class_index)))
    with run_lock(m.model):
        res = step(*args)
    result: dict = {f"maps:{k}": np.asarray(a, dtype=np.float32) for k, a in enumerate(res[0])}
    if gradcam:  # the class scores -> the model's own output, as vizlib.explain does
        from vizlib.explain.cam import model_output

        result["output"] = model_output(m, res[1])
    elif len(m.model.outputs) == 1:
        result["output"] = np.asarray(res[1], dtype=np.float32)
    if gradcam:
        raw = np.nan_to_num(np.asarray(res[2], dtype=np.float32))
        peak = float(raw.max()) if raw.size else 0.0
        result["cam"] = raw / peak if peak > 0 else np.zeros_like(raw)
        result["class_index"] = int(res[3])
    return result
