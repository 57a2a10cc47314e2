"""Feature visualisations as figures and PNGs: the layout, labels and clicking of the activation grids."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from vizlib.errors import InputError
from vizlib.featvis.rendering import FeatureVisualization


def _as_images(images: Any) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3) or arr.dtype != np.uint8 or len(arr) == 0:
        raise InputError(f"Expected uint8 images (K, H, W, 1 or 3), got {arr.dtype} {arr.shape}.")
    return arr


def _fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One (H, W, C) uint8 image as RGB at ``size``: whole-number enlargement stays crisp."""
    from PIL import Image

    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    h, w = rgb.shape[:2]
    th, tw = size
    if (th, tw) == (h, w):
        return rgb
    if th % h == 0 and tw % w == 0:
        return np.repeat(np.repeat(rgb, th // h, axis=0), tw // w, axis=1)
    resample = Image.LANCZOS if th < h else Image.BILINEAR
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb), mode="RGB").resize((tw, th), resample))


def image_mosaic(images: Any, *, cols: Optional[int] = None, cell_px: Optional[int] = None,
                 ) -> tuple[np.ndarray, dict]:
    """(K, H, W, C) uint8 images -> one RGB mosaic, laid out as :func:`vizlib.figures.mosaic` lays out maps."""
    from vizlib import figures

    arr = _as_images(images)
    k, h, w = arr.shape[:3]
    cols = max(1, min(int(cols) if cols else max(1, math.ceil(math.sqrt(k))), k))
    rows = math.ceil(k / cols)
    ch, cw = figures._cell_size(h, w, cell_px or figures._budget_cell(h, w, cols))
    gap = figures.GAP_PX
    canvas = np.empty((rows * ch + (rows + 1) * gap, cols * cw + (cols + 1) * gap, 3), dtype=np.uint8)
    canvas[:] = figures.BACKGROUND
    for i in range(k):
        r, c = divmod(i, cols)
        y0, x0 = gap + r * (ch + gap), gap + c * (cw + gap)
        canvas[y0:y0 + ch, x0:x0 + cw] = _fit(arr[i], (ch, cw))
    geo = {"rows": rows, "cols": cols, "cell": (ch, cw), "size": canvas.shape[:2], "lo": 0.0, "hi": 255.0}
    return canvas, geo


def _names(channels: Sequence[int], labels: Optional[Sequence[str]]) -> list[str]:
    return [f"{c} {labels[c]}" if labels is not None and c < len(labels) else str(c) for c in channels]


def feature_grid(vis: Any, channels: Optional[Sequence[int]] = None, *, labels: Optional[Sequence[str]] = None,
                 reference: Optional[np.ndarray] = None, title: Optional[str] = None,
                 highlight: Optional[int] = None, cols: Optional[int] = None, cell_px: Optional[int] = None,
                 height: Optional[int] = None, width_hint: int = 420) -> Any:
    """Feature visualisations as one mosaic, with the layout, labels and clicking of the channel grids.

    ``vis`` is a :class:`FeatureVisualization` (then ``channels`` defaults to
    its own) or uint8 images ``(K, H, W, C)`` with their ``channels``.
    ``labels`` names channels (class names of a classifier's last maps);
    ``reference`` (float, one value per channel of the layer: an image's mean
    activation) adds "x times this image" to the hover. Cells carry the
    channel as ``customdata`` for click-to-select, like
    :func:`vizlib.figures.channel_grid`.
    """
    from vizlib import figures

    scores: Optional[tuple] = None
    if isinstance(vis, FeatureVisualization):
        images, chosen, own = vis.images, list(vis.channels), vis.own("mean")
        scores = (vis.vs_samples(), vis.rank("fired"), vis.failed())
    else:
        images = _as_images(vis)
        if channels is None:
            raise InputError("Say which channel each image is for (channels=...).")
        chosen, own = [int(c) for c in channels], None
    if len(chosen) != len(images):
        raise InputError(f"{len(images)} images but {len(chosen)} channels.")
    canvas, geo = image_mosaic(images, cols=cols, cell_px=cell_px)
    names = _names(chosen, labels)
    hover = []
    for i, name in enumerate(names):
        text = f"channel {name}<br>the image made to excite it"
        if scores is not None:
            vs, ranks, failed = scores
            if failed[i]:
                text = f"channel {name}<br><b>FAILED</b>: not what it looks for"
            if vs is not None:
                text += f"<br>{vs[i]:.1f}× the strongest sample image"
            text += f"<br>rank {ranks[i]} in the layer"
        if own is not None:
            text += f"<br>its mean activation here: {own[i]:.3g}"
            if reference is not None and chosen[i] < len(reference):
                ref = float(reference[chosen[i]])
                if ref > 0 and own[i] > 0:
                    text += f" ({own[i] / ref:.1f}× the image's {ref:.3g})"
                else:
                    text += f" (the image: {ref:.3g})"
        hover.append(text)
    return figures._mosaic_figure(
        canvas, geo, names, hover, chosen, title=title, colormap=figures.DEFAULT_COLORMAP, colorbar=False,
        colorbar_title="", highlight=highlight, height=height,
        label_cells=len(chosen) <= figures.MAX_LABELLED_CELLS, width_hint=width_hint)


def feature_png(vis: Any, channels: Optional[Sequence[int]] = None, *, title: str = "",
                labels: Optional[Sequence[str]] = None, cell_px: int = 128, cols: Optional[int] = None) -> bytes:
    """Feature visualisations as a labelled PNG mosaic for slides (the layout of :func:`vizlib.export.grid_png`)."""
    from vizlib.export import annotated_png

    if isinstance(vis, FeatureVisualization):
        images, chosen = vis.images, list(vis.channels)
    else:
        images = _as_images(vis)
        if channels is None:
            raise InputError("Say which channel each image is for (channels=...).")
        chosen = [int(c) for c in channels]
    if len(chosen) != len(images):
        raise InputError(f"{len(images)} images but {len(chosen)} channels.")
    canvas, geo = image_mosaic(images, cols=cols, cell_px=cell_px)
    return annotated_png(canvas, geo, _names(chosen, labels), title, "gray", colorbar=False)


def image_png(image: np.ndarray, *, scale: int = 1) -> bytes:
    """One visualisation (H, W, C) uint8 as a PNG (greyscale stays greyscale), optionally enlarged ``scale`` times."""
    import io

    from PIL import Image

    arr = _as_images(image)[0]
    if scale > 1:
        arr = np.repeat(np.repeat(arr, int(scale), axis=0), int(scale), axis=1)
    pil = Image.fromarray(arr[..., 0], mode="L") if arr.shape[2] == 1 else Image.fromarray(arr, mode="RGB")
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()
