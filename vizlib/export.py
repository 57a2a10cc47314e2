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
import functools
import hashlib
import io
import json
import platform
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vizlib import archives, schema
from vizlib.errors import InputError
from vizlib.figures import DEFAULT_COLORMAP, colormap_lut, mosaic
from vizlib.units import fmt_bytes

BUNDLE_VERSION = 1
MANIFEST_NAME = "manifest.json"
ARRAYS_NAME = "activations.npz"
#: Limits when reading a bundle back (it's an upload like any other).
MAX_BUNDLE_BYTES = 100 * 2**20
MAX_MANIFEST_BYTES = 256 * 2**10
#: Deepest nesting of a manifest's JSON (what :func:`manifest` writes nests 4 deep).
MAX_MANIFEST_DEPTH = 16
#: Files in a bundle: manifest, image, arrays and a few rendered figures.
MAX_BUNDLE_MEMBERS = 64
#: Bytes of arrays read back from one bundle: what one request may compute
#: (``vizlib.extract.MAX_ACTIVATION_BYTES``), so every bundle the page exports reads back.
MAX_BUNDLE_ARRAY_BYTES = 256 * 2**20


@functools.lru_cache(maxsize=64)
def slide_font(size: int) -> ImageFont.ImageFont:
    """The font of every picture the project draws at ``size`` pixels (exports and the live frames; the
    bitmap font where FreeType is missing), loaded once per size."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the bitmap font, fixed size
        return ImageFont.load_default()


#: Exports for slides must read on a projector: at least this many pixels across, a title, and a colour
#: bar wherever values are mapped to colours. Every PNG export goes through :func:`slide_png`.
SLIDE_MIN_WIDTH = 800
SLIDE_MARGIN = 16
SLIDE_TITLE_PX = 24
SLIDE_TEXT_PX = 16
#: A colour bar: its strip, and the room its tick labels and name take to the right of it.
BAR_STRIP_PX = 28
BAR_AREA_PX = 150


@dataclass(frozen=True)
class ColourBar:
    """What the colours of a PNG export mean: the colormap spans ``lo`` (bottom) to ``hi`` (top)."""

    colormap: str
    lo: float
    hi: float
    label: str = "activation"


def slide_png(body: Any, *, title: str, colour_bar: Optional[ColourBar] = None,
              min_width: int = SLIDE_MIN_WIDTH, smooth: bool = False) -> bytes:
    """A picture (RGB uint8 array or PIL image) as a PNG for a slide: its title above it, wrapped whole,
    its colour bar beside it, at least ``min_width`` px wide.

    The one renderer of every PNG export (channel grids, across-images, Grad-CAM, depth profile,
    feature-visualisation mosaics, atlas crops). A small picture is enlarged to fill the width:
    by a whole factor without smoothing (a 7x7 map stays visibly 7x7), or smoothly when ``smooth``
    (a photograph with a map over it).
    """
    from vizlib.figures import plain_text, wrap_plain

    pic = body.convert("RGB") if isinstance(body, Image.Image) else Image.fromarray(
        np.ascontiguousarray(np.asarray(body, dtype=np.uint8)), mode="RGB")
    bar_w = BAR_AREA_PX if colour_bar is not None else 0
    room = int(min_width) - 2 * SLIDE_MARGIN - bar_w
    if pic.width < room:
        if smooth:
            size = (room, max(1, round(pic.height * room / pic.width)))
            pic = pic.resize(size, Image.LANCZOS)
        else:
            k = -(-room // pic.width)
            pic = pic.resize((pic.width * k, pic.height * k), Image.NEAREST)
    width = max(int(min_width), pic.width + 2 * SLIDE_MARGIN + bar_w)
    font = slide_font(SLIDE_TITLE_PX)
    text = plain_text(title or "").strip()
    lines = wrap_plain(text, width - 2 * SLIDE_MARGIN, font.getlength) if text else []
    line_h = int(SLIDE_TITLE_PX * 1.35)
    band = SLIDE_MARGIN + line_h * len(lines) + (SLIDE_MARGIN // 2 if lines else 0)
    bar_h = max(220, pic.height) if colour_bar is not None else 0
    out = Image.new("RGB", (width, band + max(pic.height, bar_h) + SLIDE_MARGIN), "white")
    out.paste(pic, (SLIDE_MARGIN, band))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((SLIDE_MARGIN, SLIDE_MARGIN + i * line_h), line, fill="black", font=font)
    if colour_bar is not None:
        _draw_colour_bar(out, draw, colour_bar, x0=SLIDE_MARGIN + pic.width + 24, y0=band, height=bar_h)
    buf = io.BytesIO()
    out.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _draw_colour_bar(out: Image.Image, draw: ImageDraw.ImageDraw, bar: ColourBar, *, x0: int, y0: int,
                     height: int) -> None:
    """A vertical colour bar (``hi`` at the top) with five ticks and its name written upwards beside it."""
    lut = colormap_lut(bar.colormap)
    ramp = lut[np.linspace(255, 0, height).round().astype(int)]
    out.paste(Image.fromarray(np.ascontiguousarray(np.repeat(ramp[:, None, :], BAR_STRIP_PX, axis=1))), (x0, y0))
    draw.rectangle((x0 - 1, y0 - 1, x0 + BAR_STRIP_PX, y0 + height), outline=(120, 120, 120))
    small = slide_font(SLIDE_TEXT_PX)
    lo, hi = float(bar.lo), float(bar.hi)
    widest = 0
    for i in range(5):
        frac = i / 4
        y = y0 + round(frac * (height - 1))
        value = hi - frac * (hi - lo)
        label = f"{value:.3g}"
        draw.line((x0 + BAR_STRIP_PX, y, x0 + BAR_STRIP_PX + 5, y), fill="black", width=1)
        top = min(max(y - SLIDE_TEXT_PX // 2, y0 - 4), y0 + height - SLIDE_TEXT_PX)
        draw.text((x0 + BAR_STRIP_PX + 8, top), label, fill="black", font=small)
        widest = max(widest, int(small.getlength(label)))
    name = bar.label
    while name and small.getlength(name) > height:
        name = name[:-2] + "…" if len(name) > 2 else ""
    if name:
        tw = int(small.getlength(name)) + 4
        strip = Image.new("RGB", (tw, SLIDE_TEXT_PX + 6), "white")
        ImageDraw.Draw(strip).text((2, 1), name, fill="black", font=small)
        rotated = strip.rotate(90, expand=True)
        x = min(x0 + BAR_STRIP_PX + 14 + widest, out.width - rotated.width - 2)
        out.paste(rotated, (x, y0 + (height - rotated.height) // 2))


def _slide_cell_px(k: int, cols: Optional[int], cell_px: int) -> int:
    """A cell size whose mosaic of ``k`` cells fills a slide's width (labels are drawn at that size)."""
    import math

    from vizlib.figures import GAP_PX

    n_cols = max(1, min(int(cols) if cols else math.ceil(math.sqrt(k)), k))
    need = (SLIDE_MIN_WIDTH - 2 * SLIDE_MARGIN - BAR_AREA_PX - (n_cols + 1) * GAP_PX) // n_cols
    return max(int(cell_px), min(need, 640))


def grid_png(maps: np.ndarray, channels: Optional[Sequence[int]] = None, *, colormap: str = DEFAULT_COLORMAP,
             scale: str = "shared", title: str = "", labels: Optional[Sequence[str]] = None,
             cell_px: int = 128, cols: Optional[int] = None) -> bytes:
    """A channel grid (maps of one image, (H, W, C)) as a labelled PNG for slides (:func:`slide_png`).

    The title is drawn whole, wrapped onto as many lines as it needs (a slide
    must name the layer in full, however long its name). A shared scale gets a
    colour bar; per-channel scales say so under the title.
    """
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
    canvas, geo = mosaic(stack, cols=cols, scale=scale, colormap=colormap,
                         cell_px=_slide_cell_px(len(chosen), cols, cell_px))
    names = [f"{ch} {labels[ch]}" if labels is not None and ch < len(labels) else str(ch) for ch in chosen]
    if scale != "shared":
        title = f"{title} (each map on its own colour scale)" if title else "Each map on its own colour scale"
    return annotated_png(canvas, geo, names, title, colormap, colorbar=scale == "shared")


def across_png(maps: np.ndarray, titles: Sequence[str], *, colormap: str = DEFAULT_COLORMAP,
               title: str = "", cell_px: int = 128) -> bytes:
    """One channel across images, (N, H, W), as a labelled PNG on one shared scale (:func:`slide_png`)."""
    arr = np.nan_to_num(np.asarray(maps, dtype=np.float32))
    if arr.ndim != 3 or len(arr) != len(titles) or len(arr) == 0:
        raise InputError(f"Expected (N, H, W) maps with N titles; got {arr.shape} and {len(titles)} titles.")
    canvas, geo = mosaic(arr, scale="shared", colormap=colormap, cell_px=_slide_cell_px(len(arr), None, cell_px))
    return annotated_png(canvas, geo, list(titles), title, colormap, colorbar=True)


def annotated_png(canvas: np.ndarray, geo: dict, names: Sequence[str], title: str, colormap: str,
                   colorbar: bool, bar_label: str = "activation") -> bytes:
    """A mosaic (:func:`vizlib.figures.mosaic` or alike) with each cell's name on it, as a :func:`slide_png`.

    A mosaic too narrow for a slide is enlarged by a whole factor first, so the names are drawn at the
    size they are read at.
    """
    from vizlib.figures import cell_origin

    ch, cw = geo["cell"]
    cols = geo["cols"]
    h, w = canvas.shape[:2]
    room = SLIDE_MIN_WIDTH - 2 * SLIDE_MARGIN - (BAR_AREA_PX if colorbar else 0)
    k = -(-room // w) if w < room else 1
    pic = Image.fromarray(np.ascontiguousarray(canvas)).resize((w * k, h * k), Image.NEAREST)
    draw = ImageDraw.Draw(pic)
    label_font = slide_font(max(12, min(20, cw * k // 8)))
    for i, name in enumerate(names):
        y0, x0 = cell_origin(i, cols, (ch, cw))
        x, y = x0 * k + 3, y0 * k + 2
        text = name if len(name) <= 24 else name[:23] + "…"
        box = draw.textbbox((x, y), text, font=label_font)
        draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
        draw.text((x, y), text, fill="white", font=label_font)
    bar = ColourBar(colormap, float(geo["lo"]), float(geo["hi"]), bar_label) if colorbar else None
    return slide_png(pic, title=title, colour_bar=bar)


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
             image_sha256: str = "", images: Optional[Sequence[Mapping[str, str]]] = None) -> dict[str, Any]:
    """What was on screen, as plain JSON: enough to reproduce it and to cite it.

    ``model`` is a ``LoadedModel``; ``view`` the link state (``vizlib.links.as_dict``);
    ``layers`` maps layer names to their output shapes; ``channels`` the
    channels shown per layer. Reading it back checks it against :data:`MANIFEST_SCHEMA`.
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
    return out


_NAME = schema.Str(1000)
_DIM = schema.Int(0, 2**31)
#: What a bundle's manifest.json may hold, checked before anything reads it: the fields
#: :func:`manifest` and :func:`bundle` write, with types, lengths and counts; ``view`` values are
#: what :func:`vizlib.links.from_dict` takes (text, numbers, true/false, null, lists of text).
#: Unknown top-level keys are allowed (newer versions may add some); the parse bounds their size.
MANIFEST_SCHEMA = schema.Obj(
    fields={
        "format": schema.Str(100),
        "version": schema.Int(0, 10_000),
        "created": schema.Str(100),
        "model": schema.Obj(
            fields={"key": _NAME, "title": _NAME, "weights": schema.Str(200), "source": schema.Str(4000),
                    "input_size": schema.List(schema.OneOf((_DIM, schema.Null())), 8),
                    "channels": schema.OneOf((schema.Int(0, 2**16), schema.Null())),
                    "preprocess": schema.Str(200)},
            extra=schema.Any_(), max_keys=64),
        "view": schema.Map(
            schema.OneOf((schema.Str(2000), schema.Int(), schema.Num(), schema.Bool(), schema.Null(),
                          schema.List(schema.Str(200), 500))),
            key_len=64, max_keys=200),
        "layers": schema.Map(schema.List(schema.OneOf((_DIM, schema.Null())), 8), key_len=1000, max_keys=10_000),
        "channels": schema.Map(schema.List(_DIM, 100_000), key_len=1000, max_keys=10_000),
        "image": schema.Obj(
            fields={"name": _NAME, "sha256": schema.Str(64, r"[0-9a-fA-F]*"), "member": schema.Str(500)},
            extra=schema.Any_(), max_keys=32),
        "images": schema.List(schema.Map(schema.Str(1000), key_len=64, max_keys=32), 1000),
        "versions": schema.Map(schema.Str(200), key_len=64, max_keys=100),
        "arrays": schema.Obj(
            fields={"member": schema.Str(500), "names": schema.Map(schema.Str(1000), key_len=1000, max_keys=10_000)},
            extra=schema.Any_(), max_keys=32),
    },
    required=("format",),
    extra=schema.Any_(),
    max_keys=200,
)


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
    members = [(MANIFEST_NAME, manifest_json(data)), ("image.png", png),
               (ARRAYS_NAME, npz_bytes(arrays))]
    members += [(f"figures/{name}", content) for name, content in (figures or {}).items()]
    return archives.write_zip(members)


@dataclass
class Bundle:
    """A bundle read back: the image, its name, the manifest and the arrays."""

    image: Image.Image
    image_name: str
    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]


def is_bundle(data: bytes) -> bool:
    """Whether ``data`` is a ZIP with a view manifest (as opposed to a ZIP of images).

    Never raises; the directory is sized from its end record first, so a ZIP listing
    millions of files costs nothing here (it is no bundle).
    """
    try:
        with archives.open_zip(data, label="This file", max_entries=MAX_BUNDLE_MEMBERS,
                               max_directory_bytes=64 * 2**10) as zf:
            return MANIFEST_NAME in zf.namelist()
    except InputError:  # not a ZIP the bundle reader would open (the ZIP reader will say why)
        return False


def read_manifest(raw: bytes) -> dict[str, Any]:
    """A bundle's ``manifest.json`` bytes, parsed within bounds and checked against :data:`MANIFEST_SCHEMA`."""
    what = "The bundle's manifest.json"
    meta = schema.parse_json(raw, what=what, max_bytes=MAX_MANIFEST_BYTES, max_depth=MAX_MANIFEST_DEPTH)
    if not isinstance(meta, dict) or meta.get("format") != "cnn-activation-view":
        raise InputError(f"{what} is not a dashboard view manifest.")
    schema.validate(meta, MANIFEST_SCHEMA, what=what)
    return meta


def read_bundle(data: bytes, *, max_bytes: int = MAX_BUNDLE_BYTES, max_side: Optional[int] = None,
                arrays: bool = True, max_array_bytes: int = MAX_BUNDLE_ARRAY_BYTES) -> Bundle:
    """Read a bundle made by :func:`bundle`, with the same care as any upload.

    Every level gets the upload rules before anything is allocated
    (:mod:`vizlib.archives`): the bundle's directory and members (sizes,
    compression ratio); the manifest (bounded JSON, then :data:`MANIFEST_SCHEMA`);
    the image (its SHA-256 against the manifest, then decoded by
    :func:`vizlib.images.load_image` with the upload caps and ``max_side``, default
    :data:`vizlib.images.UPLOAD_MAX_SIDE`); the ``.npz`` inside (a ZIP itself: each
    array's header is checked -- numeric, its declared size within ``max_array_bytes``
    for all arrays -- before it is read; nothing is unpickled). ``arrays=False`` skips
    the arrays (the page only needs the image and the manifest).
    """
    from vizlib.images import UPLOAD_MAX_SIDE, limits, load_image

    if len(data) > max_bytes:
        raise InputError(f"This bundle is {fmt_bytes(len(data))}; the limit is {fmt_bytes(max_bytes)}.")
    where = "the bundle"
    zf = archives.open_zip(data, label="This file", max_entries=MAX_BUNDLE_MEMBERS,
                           max_directory_bytes=64 * 2**10, what="ZIP bundle exported by the dashboard")
    with zf:
        try:
            infos = {info.filename: info for info in zf.infolist()}
        except Exception as exc:
            raise InputError("This file is not a ZIP bundle exported by the dashboard.") from exc
        if MANIFEST_NAME not in infos:
            raise InputError("This ZIP has no manifest.json, so it is not a bundle exported by the dashboard.")
        meta = read_manifest(archives.read_member(zf, infos[MANIFEST_NAME], where=where,
                                                  max_bytes=MAX_MANIFEST_BYTES))
        image_info = meta.get("image") or {}
        member = image_info.get("member", "image.png")
        if member not in infos:
            raise InputError("The bundle holds no image.")
        raw = archives.read_member(zf, infos[member], where=where, max_bytes=limits.MAX_IMAGE_BYTES,
                                   what="Bundles hold the image the view was made from, as a PNG.")
        expected = image_info.get("sha256")
        if expected and sha256(raw) != expected.lower():
            raise InputError("The bundle's image does not match the SHA-256 in its manifest; it was changed.")
        image_name = str(image_info.get("name") or member)
        image = load_image(raw, name=image_name, max_side=UPLOAD_MAX_SIDE if max_side is None else max_side)
        out: dict[str, np.ndarray] = {}
        if arrays and ARRAYS_NAME in infos:
            blob = archives.read_member(zf, infos[ARRAYS_NAME], where=where, max_bytes=max_array_bytes + 2**20,
                                        limit=max_array_bytes, what="Export fewer layers.")
            keymap = (meta.get("arrays") or {}).get("names") or {}
            found = archives.read_npz(blob, where=f"{where}'s {ARRAYS_NAME}", max_bytes=max_array_bytes)
            out = {str(keymap.get(key, key)): value for key, value in found.items()}
    return Bundle(image=image, image_name=str(image_info.get("name") or "bundle image"), manifest=meta,
                  arrays=out)


# Arguments of the wrong type are InputErrors naming them (vizlib.arguments).
from vizlib.arguments import check_namespace as _check_namespace  # noqa: E402

_check_namespace(globals(), [n for n, v in list(globals().items()) if not n.startswith("_") and callable(v)
                             and getattr(v, "__module__", "") == __name__])
