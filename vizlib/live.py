"""The camera as a live stream: one RGB frame in, one composed RGB frame out.

A :class:`FrameProcessor` takes a camera frame (``uint8 (H, W, 3)``) and returns
the frame the visitor sees: the camera picture (optionally with the Grad-CAM
of the top class over it), the channel grids of two layers (first and last conv
by default) and the top-5 prediction as text bars, all drawn into pixels here.
Per-frame pictures go into the video, never through a page rerun: a rerun with
Plotly charts costs more than a frame (DESIGN.md, "Live streams").

Everything goes through the project's single path for each step: the image
becomes the model's input by :func:`vizlib.extract.forward` (the batch
preprocessing, ``model_view``), both layers and the prediction come from its one
cached multi-output forward pass, the grids are :func:`vizlib.figures.mosaic`,
the Grad-CAM is :func:`vizlib.explain.gradcam`.

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

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vizlib.errors import InputError

#: Composed frame size (width, height): 16:9, readable on a projector.
SIZE = (960, 540)
PRESENTER_SIZE = (1280, 720)
#: Channels shown per grid (the first N, or N around the stepped channel).
GRID_CHANNELS = 16
#: Largest camera frame accepted (pixels per side): a 4K webcam is scaled down by the browser anyway.
MAX_FRAME_SIDE = 4096
BACKGROUND = (20, 24, 31)
TEXT = (235, 238, 242)
DIM = (150, 158, 170)
BAR = (76, 140, 212)
HIGHLIGHT = (255, 200, 40)
LIMIT_MESSAGE = ("The live view is full: {n} live streams are running on this server, its limit "
                 "(CNN_VIZ_LIVE_STREAMS). Use the snapshot camera below, or try again when a stream stops.")


def _font(size: int) -> Any:
    """Pillow's bundled scalable font at ``size`` px (no system font needed, works offline)."""
    return ImageFont.load_default(size=int(size))


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
        from vizlib.extract import forward, ranked_classes

        frame = check_frame(frame)
        layers, channel, cls = self.layers, self.channel, self.class_index
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        pil = Image.fromarray(frame, mode="RGB")
        acts, output = forward(self.model, [pil], list(layers), predictions=True)
        top = ranked_classes(self.model, output, 5)[0] if output is not None and self.model.is_classifier else []
        t1 = time.perf_counter()
        seconds["forward"] = t1 - t0
        cam, cam_class = None, None
        if self.gradcam and top:
            from vizlib.explain import gradcam

            cam_class = top[0][0] if cls is None else int(cls)
            cam = gradcam(self.model, pil, cam_class)
            seconds["gradcam"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        channel = int(channel) % int(acts[layers[-1]].shape[-1])
        grids = [self._grid(acts[name][0], channel if k == len(layers) - 1 else None)
                 for k, name in enumerate(layers)]
        image = self._compose(pil, cam, grids, layers, top, channel, cam_class)
        seconds["draw"] = time.perf_counter() - t2
        self.frames += 1
        self.last = LiveFrame(image=image, top=top, layers=tuple(layers), channel=channel,
                              class_index=cam_class, seconds=seconds)
        return self.last

    def close(self) -> None:
        """Forget the last frame (the stream stopped; its pictures go with it)."""
        self.last = None

    # -- drawing ------------------------------------------------------------------------------
    def _grid(self, maps: np.ndarray, channel: Optional[int]) -> tuple[np.ndarray, dict, list[int]]:
        """(H, W, C) maps -> a mosaic of up to ``grid_channels`` channels (the page that holds ``channel``)."""
        from vizlib.figures import mosaic

        c = maps.shape[-1]
        k = min(self.grid_channels, c)
        channel = None if channel is None else int(channel) % c  # a step past the last channel wraps
        start = 0 if channel is None else (channel // k) * k
        picked = [i for i in range(start, min(c, start + k))]
        canvas, geo = mosaic(np.moveaxis(maps[..., picked], -1, 0), colormap=self.colormap, cell_px=48)
        return canvas, geo, picked

    def _compose(self, pil: Image.Image, cam: Optional[np.ndarray], grids: list, layers: Sequence[str],
                 top: list, channel: int, cam_class: Optional[int]) -> np.ndarray:
        from vizlib.figures import cell_origin, colormap_lut

        W, H = PRESENTER_SIZE if self.presenter else SIZE
        s = W / SIZE[0]
        pad, title = int(8 * s), int(18 * s)
        out = Image.new("RGB", (W, H), BACKGROUND)
        draw = ImageDraw.Draw(out)
        small, big = _font(title), _font(int(22 * s))
        # Left: the camera (Grad-CAM over it), then the top-5 bars.
        left_w = W // 2 - pad
        cam_box = (left_w - pad, int(H * 0.62))
        shown = _fit(pil, cam_box)
        if cam is not None:
            heat = Image.fromarray(colormap_lut("turbo")[np.clip(cam * 255, 0, 255).astype(np.uint8)], mode="RGB")
            heat = heat.resize(shown.size, Image.BILINEAR)
            shown = Image.blend(shown, heat, self.cam_opacity)
        out.paste(shown, (pad, pad))
        y = pad + shown.height + pad
        if cam_class is not None:
            draw.text((pad, y), f"Grad-CAM: {self._name(cam_class)}", fill=HIGHLIGHT, font=small)
            y += title + pad // 2
        row = max(int(14 * s), (H - y - pad) // 5)
        font = _font(min(int(row * 0.7), int(30 * s)))
        bar_x, bar_w = pad + int(left_w * 0.45), left_w - int(left_w * 0.45) - pad
        for i, (_, name, p) in enumerate(top[:5]):
            yy = y + i * row
            draw.text((pad, yy), f"{name[:22]}", fill=TEXT if i == 0 else DIM, font=font)
            draw.rectangle((bar_x, yy + 2, bar_x + max(1, int(bar_w * float(p))), yy + row - 4),
                           fill=BAR if i else HIGHLIGHT)
            draw.text((bar_x + 4, yy), f"{p:.0%}", fill=BACKGROUND if i == 0 and p > 0.15 else TEXT, font=font)
        # Right: one grid per layer, stacked.
        x0 = W // 2
        box_w = W - x0 - pad
        box_h = (H - pad) // max(1, len(grids)) - int(22 * s) - pad
        y = pad
        for name, (canvas, geo, picked) in zip(layers, grids):
            label = f"{name}: channels {picked[0]}-{picked[-1]}"
            draw.text((x0, y), label, fill=TEXT, font=big if self.presenter else small)
            y += (int(22 * s) if self.presenter else title) + pad // 2
            img = Image.fromarray(canvas, mode="RGB")
            fitted = _fit(img, (box_w, box_h), Image.NEAREST)
            out.paste(fitted, (x0, y))
            if channel in picked and name == layers[-1]:
                f = fitted.width / img.width
                cy, cx = cell_origin(picked.index(channel), geo["cols"], geo["cell"])
                ch, cw = geo["cell"]
                draw.rectangle((x0 + int(cx * f) - 2, y + int(cy * f) - 2, x0 + int((cx + cw) * f) + 1,
                                y + int((cy + ch) * f) + 1), outline=HIGHLIGHT, width=max(2, int(2 * s)))
            y += box_h + pad
        return np.asarray(out, dtype=np.uint8)

    def _name(self, index: int) -> str:
        names = self.model.class_names or []
        return names[index] if 0 <= index < len(names) else f"class {index}"
