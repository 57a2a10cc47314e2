"""Pictures of attribution maps for the scoreboard: small blended thumbnails (arrays -> pixels, nothing computed)."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from vizlib.errors import InputError
from vizlib.explain_figures import CAM_COLORMAP
from vizlib.figures import colormap_lut


def thumbnail(image: Any, saliency: np.ndarray, *, opacity: float = 0.5, colormap: str = CAM_COLORMAP,
              side: int = 224) -> np.ndarray:
    """The map in ``colormap`` (the Grad-CAM overlay's) blended over the model's view: uint8 RGB, ``side`` wide.

    ``image``: the model's view (uint8 (H, W) or (H, W, 3)); ``saliency``: (H, W) in [0, 1].
    Small maps are enlarged with smoothing so a 64-pixel input still reads as a picture.
    """
    sal = np.asarray(saliency, dtype=np.float32)
    base = np.asarray(image)
    if sal.ndim != 2 or base.shape[:2] != sal.shape:
        raise InputError(f"The map {sal.shape} and the image {base.shape} must have the same height and width.")
    rgb = base if base.ndim == 3 else np.repeat(base[..., None], 3, axis=-1)
    idx = np.clip(np.rint(np.nan_to_num(sal) * 255), 0, 255).astype(np.uint8)
    heat = colormap_lut(colormap)[idx].astype(np.float32)
    blended = np.clip(np.rint((1 - opacity) * rgb.astype(np.float32) + opacity * heat), 0, 255).astype(np.uint8)
    h, w = sal.shape
    scale = max(1.0, side / max(h, w))
    if scale > 1.0:
        pil = Image.fromarray(blended).resize((int(round(w * scale)), int(round(h * scale))), Image.BILINEAR)
        blended = np.asarray(pil, dtype=np.uint8)
    return blended
