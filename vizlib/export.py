"""PNG / NPY / NPZ / JSON exports of what is on screen, and the bundle that reopens a view.

* :func:`grid_png` – a channel grid as a self-contained PNG for slides and
  papers: title, channel labels, a colour bar with its values.
* :func:`npy_bytes` / :func:`npz_bytes` – raw activations, loadable with
  ``np.load(..., allow_pickle=False)``.
* :func:`manifest` – a small JSON-able record of the view: model, weights,
  layers and shapes, channels, image name and SHA-256, library versions.
* :func:`bundle` / :func:`read_bundle` – a ZIP of image + manifest + arrays.
  Uploading it back into the app reopens the same view; this is how a view of
  an image that isn't a sample travels (an upload can't go in a URL).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import platform
import zipfile
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vizlib.errors import InputError
from vizlib.figures import DEFAULT_COLORMAP, colormap_lut, mosaic

BUNDLE_VERSION = 1
MANIFEST_NAME = "manifest.json"
ARRAYS_NAME = "activations.npz"
#: Limits when reading a bundle back (it's an upload like any other).
MAX_BUNDLE_BYTES = 100 * 2**20
MAX_MANIFEST_BYTES = 256 * 2**10
_IMAGE_MEMBER_PREFIX = "image."


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the bitmap font, fixed size
        return ImageFont.load_default()


def grid_png(maps: np.ndarray, channels: Optional[Sequence[int]] = None, *, colormap: str = DEFAULT_COLORMAP,
             scale: str = "shared", title: str = "", labels: Optional[Sequence[str]] = None,
             cell_px: int = 128, cols: Optional[int] = None) -> bytes:
    """A channel grid (maps of one image, (H, W, C)) as a labelled PNG with a colour bar.

    The title is drawn whole, wrapped onto as many lines as it needs (a slide
    must name the layer in full, however long its name).
    """
    from vizlib.figures import plain_text, wrap_plain

    arr = np.asarray(maps, dtype=np.float32)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise InputError(f"Expected one image's maps, shape (H, W, C); got {arr.shape}.")
    c = arr.shape[-1]
    chosen = list(range(min(c, 49))) if channels is None else [int(i) for i in channels]
    if not chosen or any(not 0 <= i < c for i in chosen):
        raise InputError(f"Channels must lie in 0 to {c - 1}.")
    stack = np.nan_to_num(np.moveaxis(arr[:, :, chosen], -1, 0))
    canvas, geo = mosaic(stack, cols=cols, scale=scale, colormap=colormap, cell_px=cell_px)
    names = [f"{ch} {labels[ch]}" if labels is not None and ch < len(labels) else str(ch) for ch in chosen]
    body = _annotated_png(canvas, geo, names, "", colormap, colorbar=scale == "shared")
    text = plain_text(title or "").strip()
    if not text:
        return body
    grid = Image.open(io.BytesIO(body)).convert("RGB")
    font = _font(18)
    # A narrow grid (a few channels) gets a wider canvas rather than a title of many short lines.
    width = max(grid.width, min(int(font.getlength(text)) + 12, 640))
    lines = wrap_plain(text, width - 12, font.getlength)
    line_h = 24
    band = 8 + line_h * len(lines)
    out = Image.new("RGB", (width, grid.height + band), "white")
    out.paste(grid, (0, band))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((6, 8 + i * line_h), line, fill="black", font=font)
    buf = io.BytesIO()
    out.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def across_png(maps: np.ndarray, titles: Sequence[str], *, colormap: str = DEFAULT_COLORMAP,
               title: str = "", cell_px: int = 128) -> bytes:
    """One channel across images, (N, H, W), as a labelled PNG on one shared scale."""
    arr = np.nan_to_num(np.asarray(maps, dtype=np.float32))
    if arr.ndim != 3 or len(arr) != len(titles) or len(arr) == 0:
        raise InputError(f"Expected (N, H, W) maps with N titles; got {arr.shape} and {len(titles)} titles.")
    canvas, geo = mosaic(arr, scale="shared", colormap=colormap, cell_px=cell_px)
    return _annotated_png(canvas, geo, list(titles), title, colormap, colorbar=True)


def _annotated_png(canvas: np.ndarray, geo: dict, names: Sequence[str], title: str, colormap: str,
                   colorbar: bool) -> bytes:
    from vizlib.figures import GAP_PX

    ch, cw = geo["cell"]
    cols = geo["cols"]
    h, w = canvas.shape[:2]
    title_h = 36 if title else 8
    bar_w = 90 if colorbar else 0
    out = Image.new("RGB", (w + bar_w + 8, h + title_h + 8), "white")
    out.paste(Image.fromarray(canvas), (4, title_h))
    draw = ImageDraw.Draw(out)
    if title:
        draw.text((6, 8), title, fill="black", font=_font(18))
    label_font = _font(max(10, min(16, cw // 8)))
    for i, name in enumerate(names):
        r, c = divmod(i, cols)
        x, y = 4 + GAP_PX + c * (cw + GAP_PX) + 2, title_h + GAP_PX + r * (ch + GAP_PX) + 2
        text = name if len(name) <= 24 else name[:23] + "…"
        box = draw.textbbox((x, y), text, font=label_font)
        draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
        draw.text((x, y), text, fill="white", font=label_font)
    if colorbar:
        lut = colormap_lut(colormap)
        bar_h = max(64, h - 20)
        ramp = lut[np.linspace(255, 0, bar_h).astype(int)]
        strip = np.repeat(ramp[:, None, :], 16, axis=1)
        x0, y0 = w + 14, title_h + 10
        out.paste(Image.fromarray(strip), (x0, y0))
        small = _font(12)
        draw.text((x0 + 20, y0 - 6), f"{geo['hi']:.3g}", fill="black", font=small)
        draw.text((x0 + 20, y0 + bar_h - 8), f"{geo['lo']:.3g}", fill="black", font=small)
        draw.text((x0 + 20, y0 + bar_h // 2 - 6), "activation", fill="black", font=small)
    buf = io.BytesIO()
    out.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """One array as ``.npy`` bytes."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Several named arrays as compressed ``.npz`` bytes (names such as ``block1_conv1``)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{_npz_key(k): np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def _npz_key(name: str) -> str:
    # "/" would become a folder inside the zip; keep layer names of nested models readable.
    return name.replace("/", "__")


def versions() -> dict[str, str]:
    """Versions of the libraries that produced an export."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("keras", "tensorflow-cpu", "tensorflow", "numpy", "pillow", "plotly", "streamlit"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    from vizlib import __version__

    out["vizlib"] = __version__
    return out


def manifest(*, model: Any, view: Mapping[str, Any], layers: Mapping[str, Sequence[int]],
             channels: Mapping[str, Sequence[int]] | None = None, image_name: str = "",
             image_sha256: str = "", images: Optional[Sequence[Mapping[str, str]]] = None,
             extra: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """What was on screen, as plain JSON: enough to reproduce it and to cite it.

    ``model`` is a ``LoadedModel``; ``view`` the link state (``vizlib.links.as_dict``);
    ``layers`` maps layer names to their output shapes; ``channels`` the
    channels shown per layer.
    """
    out: dict[str, Any] = {
        "format": "cnn-activation-view",
        "version": BUNDLE_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "key": getattr(model, "key", ""),
            "title": getattr(model, "title", ""),
            "weights": getattr(model, "weights", ""),
            "source": getattr(model, "source", ""),
            "input_size": list(getattr(model, "input_size", ())),
            "channels": getattr(model, "channels", None),
            "preprocess": getattr(model, "preprocess_name", ""),
        },
        "view": dict(view),
        "layers": {name: [int(d) for d in shape] for name, shape in layers.items()},
        "channels": {name: [int(c) for c in chs] for name, chs in (channels or {}).items()},
        "image": {"name": image_name, "sha256": image_sha256},
        "versions": versions(),
    }
    if images is not None:
        out["images"] = [dict(i) for i in images]
    if extra:
        out.update(extra)
    return out


def manifest_json(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, indent=2, sort_keys=False).encode("utf-8")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def bundle(*, image: Image.Image, image_name: str, manifest_data: Mapping[str, Any],
           arrays: Mapping[str, np.ndarray], figures: Optional[Mapping[str, bytes]] = None) -> bytes:
    """A ZIP holding the image (PNG), the manifest and the arrays; optionally rendered PNGs.

    The manifest's ``image.sha256`` is set to the SHA-256 of the PNG stored in the
    bundle, so a reader can check the image is the one the view was made from.
    """
    png = image_png(image)
    data = dict(manifest_data)
    data["image"] = {**dict(data.get("image") or {}), "name": image_name, "sha256": sha256(png),
                     "member": "image.png"}
    data["arrays"] = {"member": ARRAYS_NAME, "names": {_npz_key(k): k for k in arrays}}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST_NAME, manifest_json(data))
        zf.writestr("image.png", png)
        zf.writestr(ARRAYS_NAME, npz_bytes(arrays))
        for name, content in (figures or {}).items():
            zf.writestr(f"figures/{name}", content)
    return buf.getvalue()


@dataclass
class Bundle:
    """A bundle read back: the image, its name, the manifest and the arrays."""

    image: Image.Image
    image_name: str
    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]


def is_bundle(data: bytes) -> bool:
    """Whether ``data`` is a ZIP with a view manifest (as opposed to a ZIP of images)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return MANIFEST_NAME in zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def _read_member(zf: zipfile.ZipFile, name: str, limit: int) -> bytes:
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise InputError(f"The bundle's {name} is {info.file_size / 2**20:.1f} MB, over the {limit / 2**20:.0f} MB limit.")
    if info.compress_size and info.file_size / info.compress_size > 200 and info.file_size > 2**20:
        raise InputError(f"The bundle's {name} is compressed suspiciously well; refusing it.")
    with zf.open(info) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"The bundle's {name} is larger than it claims; refusing it.")
    return data


def read_bundle(data: bytes, *, max_bytes: int = MAX_BUNDLE_BYTES) -> Bundle:
    """Read a bundle made by :func:`bundle`, with the same care as any upload.

    Checks the manifest format, the image's SHA-256 and decodes the image through
    :func:`vizlib.images.load_image`; arrays load with ``allow_pickle=False``.
    """
    from vizlib.images import load_image

    if len(data) > max_bytes:
        raise InputError(f"This bundle is {len(data) / 2**20:.0f} MB; the limit is {max_bytes / 2**20:.0f} MB.")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InputError("This file is not a ZIP bundle exported by the dashboard.") from exc
    with zf:
        names = set(zf.namelist())
        if MANIFEST_NAME not in names:
            raise InputError("This ZIP has no manifest.json, so it is not a bundle exported by the dashboard.")
        try:
            meta = json.loads(_read_member(zf, MANIFEST_NAME, MAX_MANIFEST_BYTES).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError("The bundle's manifest.json is not valid JSON.") from exc
        if not isinstance(meta, dict) or meta.get("format") != "cnn-activation-view":
            raise InputError("The bundle's manifest.json is not a dashboard view manifest.")
        image_info = meta.get("image") if isinstance(meta.get("image"), dict) else {}
        member = image_info.get("member", "image.png")
        if member not in names:
            raise InputError("The bundle holds no image.")
        raw = _read_member(zf, member, max_bytes)
        expected = image_info.get("sha256")
        if expected and sha256(raw) != expected:
            raise InputError("The bundle's image does not match the SHA-256 in its manifest; it was changed.")
        image = load_image(raw, name=str(image_info.get("name") or member))
        arrays: dict[str, np.ndarray] = {}
        if ARRAYS_NAME in names:
            blob = _read_member(zf, ARRAYS_NAME, max_bytes)
            try:
                with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                    keymap = (meta.get("arrays") or {}).get("names") or {}
                    for key in npz.files:
                        arrays[str(keymap.get(key, key))] = npz[key]
            except (ValueError, OSError, zipfile.BadZipFile) as exc:
                raise InputError("The bundle's activations.npz could not be read.") from exc
    return Bundle(image=image, image_name=str(image_info.get("name") or "bundle image"), manifest=meta,
                  arrays=arrays)
