"""The atlas on the page: open one, check it against the model, show a channel's top images, build a small one.

The page calls :func:`atlas_panel` once per run (inside its atlas view); it
draws everything and returns the top-k item the user clicked, if any, with
the picture to open in the views. Smaller pieces (:func:`choose_atlas`,
:func:`show_top`, :func:`build_panel`) are there for a page that lays them out
itself. Paths from the page reach the disk only through
:func:`vizlib.atlas.load` with the host's root (``CNN_VIZ_ATLAS_ROOT``), and
uploaded ZIPs through :func:`vizlib.atlas.store.extract_zip`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

import streamlit as st

import numpy as np

from vizlib.atlas import Atlas, load
from vizlib.atlas.figure import top_mosaic, top_png
from vizlib.atlas.job import build_from_images
from vizlib.atlas.store import MANIFEST, extract_zip
from vizlib.errors import InputError
from vizlib.settings import settings
from ui.clicks import selected_points
from ui.state import put

log = logging.getLogger("cnn_viz")

#: Images an atlas built in the page may hold, and their total size (as for uploads).
PAGE_MAX_IMAGES = 200
PAGE_MAX_BYTES = 200 * 2**20
#: k of an atlas built in the page.
PAGE_TOP = 9
#: How deep under the root atlases are looked for.
MAX_DEPTH = 3
UPLOADED = "Upload a zipped atlas…"
#: k of ``python -m vizlib.atlas build`` when ``--top`` is not given (said on the page beside PAGE_TOP).
COMMAND_TOP = 49
#: A channel whose strongest response over the whole atlas is at most this share of the layer's
#: strongest (or not positive) is dead: nothing in these images excites it (8e-34 is "0").
DEAD_SHARE = 1e-6
CHART_CONFIG = {"displayModeBar": False, "displaylogo": False}


# --------------------------------------------------------------------------- finding and opening atlases


def atlas_root() -> Optional[Path]:
    """The folder the host allows atlases to be opened from (``CNN_VIZ_ATLAS_ROOT``), if any."""
    root = settings().atlas_root
    return root if root is not None and root.is_dir() else None


def list_atlases(root: Optional[Path] = None) -> list[str]:
    """Names (relative paths) of the atlas folders under the root, up to :data:`MAX_DEPTH` deep; no links followed."""
    root = root or atlas_root()
    if root is None:
        return []
    found = []
    base_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        depth = len(Path(dirpath).parts) - base_depth
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "stats") if depth < MAX_DEPTH else []
        if MANIFEST in filenames and dirpath != str(root):
            found.append(Path(dirpath).relative_to(root).as_posix())
    return sorted(found)


# Each open atlas may hold its decoded top-k table (at most MAX_TOP_DECODED, 256 MB): 3 named + 2 uploaded
# atlases keep the worst case near 1.3 GB, inside the server's ~3 GB budget with the models beside them.
@st.cache_resource(max_entries=3, show_spinner=False)
def _open_named(name: str, root: str, mtime_ns: int) -> Atlas:
    return load(name, root=root)


@st.cache_resource(max_entries=2, show_spinner="Unpacking the atlas…")
def _open_zip(digest: str, _data: bytes) -> Atlas:
    target = settings().cache_dir / "atlas-uploads" / digest
    return extract_zip(_data, target)


def open_named(name: str) -> Atlas:
    """The atlas ``name`` under the root (cached while its manifest is unchanged); InputError if not allowed."""
    root = atlas_root()
    if root is None:
        raise InputError("This server has no atlas folder (the host sets CNN_VIZ_ATLAS_ROOT).")
    path = root / name
    try:
        mtime = (path / MANIFEST).stat().st_mtime_ns if not Path(name).is_absolute() else 0
    except OSError:
        mtime = 0
    return _open_named(name, str(root), mtime)


def open_uploaded(data: bytes) -> Atlas:
    """A zipped atlas from the page, unpacked under the server's cache folder and validated."""
    return _open_zip(hashlib.sha256(data).hexdigest(), data)


def mismatch(atlas: Atlas, model: Any) -> Optional[str]:
    """A message when ``atlas`` was not built with ``model`` (None when it was)."""
    return atlas.model_mismatch(model)


def _session_atlases() -> dict[str, tuple[str, Atlas]]:
    """Atlases this session uploaded or built in the page: picker value -> (label, atlas)."""
    return st.session_state.setdefault("_atlases", {})


def remember(value: str, label: str, atlas: Atlas, *, key: str = "atlas") -> None:
    """List an uploaded or page-built atlas in the picker and pick it, so the picker names what is shown."""
    _session_atlases()[value] = (label, atlas)
    st.session_state[f"{key}-pick"] = value


def atlas_label(value: Optional[str]) -> str:
    """How the picker names an option: a folder under the root as itself, a session atlas by its label."""
    if value in _session_atlases():
        return _session_atlases()[value][0]
    return str(value)


def choose_atlas(model: Any, *, key: str = "atlas", name: Optional[str] = None) -> Optional[Atlas]:
    """Pick an atlas under the root (``name`` preselects one, e.g. from the link), one this session uploaded
    or built, or upload a zipped one.

    Shows a clear message and returns None when it can't be opened or was built
    with another model than ``model``.
    """
    options = list_atlases()
    session = list(_session_atlases())
    choices = options + session + [UPLOADED]
    widget = f"{key}-name"
    pick = st.session_state.pop(f"{key}-pick", None)
    if pick in choices:
        st.session_state[widget] = pick
    elif name and name in options and st.session_state.get(widget) is None:
        st.session_state[widget] = name
    if st.session_state.get(widget) not in (None, *choices):
        st.session_state[widget] = None
    extra = {} if widget in st.session_state else {"index": None if options or session else len(choices) - 1}
    picked = st.selectbox("Atlas", choices, key=widget, placeholder="Choose an atlas", format_func=atlas_label,
                          **extra,
                          help="Atlases are built with `python -m vizlib.atlas build` into the folder the host "
                               "configured, uploaded as a .zip of an atlas folder, or built here from your "
                               "uploads; the ones of this session are listed too.")
    atlas: Optional[Atlas] = None
    try:
        if picked == UPLOADED:
            up = st.file_uploader("Zipped atlas", type=["zip"], key=f"{key}-zip")
            if up is None:
                return None
            data = up.getvalue()
            atlas = open_uploaded(data)
            remember(f"upload:{hashlib.sha256(data).hexdigest()[:16]}", f"Uploaded: {up.name}", atlas, key=key)
            st.rerun()  # the picker now names the uploaded atlas
        elif picked in _session_atlases():
            atlas = _session_atlases()[picked][1]
        elif picked:
            atlas = open_named(picked)
    except InputError as exc:
        st.error(str(exc))
        return None
    if atlas is None:
        return None
    problem = mismatch(atlas, model)
    if problem:
        st.warning(problem)
        return None
    return atlas


# --------------------------------------------------------------------------- live and dead channels


def channel_peaks(atlas: Atlas, layer: str) -> np.ndarray:
    """Each channel's strongest response over the atlas's images (its top-1 value; NaN when it has none)."""
    n = int(atlas.layer(layer)["shape"][2])
    peaks = np.full(n, np.nan)
    for c in range(n):
        rows = atlas.top(layer, c)
        if rows and rows[0]["value"] is not None:
            peaks[c] = float(rows[0]["value"])
    return peaks


def dead_channels(peaks: np.ndarray) -> list[int]:
    """Channels nothing in the atlas excites: no value, not positive, or under :data:`DEAD_SHARE` of the
    layer's strongest."""
    finite = peaks[np.isfinite(peaks)]
    best = float(finite.max()) if finite.size else 0.0
    return [int(c) for c, v in enumerate(peaks)
            if not np.isfinite(v) or v <= 0 or (best > 0 and v <= DEAD_SHARE * best)]


def most_active(peaks: np.ndarray) -> Optional[int]:
    """The live channel with the strongest response (None when every channel is dead)."""
    dead = set(dead_channels(peaks))
    live = [c for c in range(len(peaks)) if c not in dead]
    return max(live, key=lambda c: (peaks[c], -c)) if live else None


def apply_jump() -> None:
    """Before the channel widget is drawn: take the channel an atlas asked to open on (see :func:`atlas_panel`)."""
    goto = st.session_state.pop("_atlas_goto", None)
    if goto is not None:
        put(channel=int(goto))


def _go_to(channel: int) -> None:
    st.session_state["channel"] = int(channel)


# --------------------------------------------------------------------------- showing a channel


def picked_item(event: Any, atlas: Atlas, rows: Sequence[dict]) -> Optional[dict]:
    """The row a plotly selection event points at, with its stored picture as ``image``."""
    for point in selected_points(event):
        rank = point.get("customdata")
        if isinstance(rank, list):
            rank = rank[0] if rank else None
        if isinstance(rank, (int, float)) and 0 <= int(rank) < len(rows):
            row = dict(rows[int(rank)])
            row["image"] = atlas.picture(row["path"])
            return row
    return None


def show_top(atlas: Atlas, layer: str, channel: int, *, key: str = "atlas-top", cols: Optional[int] = None,
             highlight: Optional[int] = None) -> Optional[dict]:
    """The top-k crops of ``layer``/``channel`` as a mosaic with values; returns the clicked item, if any.

    The item is the row of :meth:`Atlas.top` (``path``, ``value``, ``row``,
    ``col``, ``rank`` ...) plus ``image``: the stored picture (RGB PIL image) to
    open in the views.
    """
    if layer not in atlas.layers:
        st.info(f"This atlas covers {', '.join(atlas.layers)}; pick one of those layers to see its top images.")
        return None
    rows = atlas.top(layer, channel)
    counts = atlas.manifest["counts"]
    peaks = channel_peaks(atlas, layer)
    dead = dead_channels(peaks)
    if channel in dead:
        best = most_active(peaks)
        peak = "none" if not np.isfinite(peaks[channel]) else f"{peaks[channel]:.3g}"
        st.warning(f"Channel {channel} of {layer} is **dead** in this atlas: its strongest response over "
                   f"{counts.get('decoded', 0)} images is {peak}, zero for practical purposes, so its "
                   "\"top\" images are arbitrary.")
        if best is not None:
            st.button(f"Show channel {best}, the most active", key=f"{key}-best", on_click=_go_to, args=(best,))
        title = f"{layer} · channel {channel} (dead: nothing in these {counts.get('decoded', 0)} images excites it)"
    else:
        title = (f"{layer} · channel {channel}: the {len(rows)} of {counts.get('decoded', 0)} images that "
                 "excite it most")
    crops = atlas.crops(layer, channel)
    fig = top_mosaic(crops, rows, cols=cols, title=title, highlight=highlight)
    stored = stored_feature_visualization(atlas, layer, channel)
    if stored is not None:
        left, right = st.columns([1, 4])
        with left:
            st.markdown("**What this channel looks for**")
            st.image(stored[..., 0] if stored.shape[-1] == 1 else stored, width="stretch")
            s = atlas.feature_visualization_settings(layer) or {}
            st.caption(f"Feature visualisation stored in the atlas ({s.get('steps', '?')} steps, seed "
                       f"{s.get('seed', '?')}): an image optimised to excite the channel.")
        with right:
            event = st.plotly_chart(fig, key=key, on_select="rerun", selection_mode="points", config=CHART_CONFIG)
    else:
        event = st.plotly_chart(fig, key=key, on_select="rerun", selection_mode="points", config=CHART_CONFIG)
    failed = counts.get("failed", 0)
    dead_note = ""
    if dead:
        listed = ", ".join(map(str, dead[:24])) + (" …" if len(dead) > 24 else "")
        dead_note = f" Dead channels of {layer} here ({len(dead)} of {len(peaks)}): {listed}."
    st.caption(f"Crops: the part of each image the unit at the maximum sees (its receptive field). "
               f"{counts.get('images', 0)} images, {failed} skipped as unreadable. This atlas keeps each channel's "
               f"top {atlas.top_k}. Click one to open it.{dead_note}")
    if rows:
        st.download_button("Top images (PNG)", key=f"{key}-png", mime="image/png", on_click="ignore",
                           file_name=f"atlas_{layer.replace('/', '_')}_channel{channel}.png",
                           data=lambda: top_png(crops, rows, title=title))
    return picked_item(event, atlas, rows)


def stored_feature_visualization(atlas: Atlas, layer: str, channel: int) -> Any:
    """The atlas's stored feature visualisation of ``layer``/``channel`` (uint8 H, W, C), or None.

    A damaged featvis file must not take the top images down with it: it is reported and skipped.
    """
    try:
        return atlas.feature_visualization(layer, channel)
    except InputError as exc:
        st.warning(f"The atlas's stored feature visualisation can't be used: {exc}")
        return None


# --------------------------------------------------------------------------- building a small one


def _build_key(model: Any, images: Sequence[tuple[str, Any]], layers: Sequence[str], top: int) -> str:
    h = hashlib.sha256(f"{model.key}\0{model.weights_digest()}\0{','.join(layers)}\0{top}\0".encode())
    for name, image in images:
        h.update(str(name).encode() + b"\0")
        if isinstance(image, (bytes, bytearray, memoryview)):
            h.update(hashlib.sha256(image).digest())
        else:
            from vizlib.images import image_digest

            h.update(image_digest(image).encode())
    return h.hexdigest()[:32]


def build_small(model: Any, images: Sequence[tuple[str, Any]], *, layers: Optional[Sequence[str]] = None,
                top: int = PAGE_TOP, progress: Any = None) -> Atlas:
    """Build (or reuse) an atlas of ``images`` under the server's cache folder, size-limited."""
    from vizlib.atlas import default_layers

    names = list(layers) if layers else default_layers(model)
    workdir = settings().cache_dir / "atlas-builds" / _build_key(model, images, names, top)

    def build() -> Atlas:
        return build_from_images(model, images, workdir, layers=names, top=top, max_images=PAGE_MAX_IMAGES,
                                 max_total_bytes=PAGE_MAX_BYTES, progress=progress)

    existed = workdir.exists()
    try:
        return build()
    except InputError:
        if not existed:
            raise
        # The server's own earlier build of these images is damaged (a killed process, a full disk, a
        # hand edit): it is a cache entry, so drop it and build again rather than fail on every visit.
        log.warning("dropping a damaged page-built atlas in the cache and building it again", exc_info=True)
        shutil.rmtree(workdir, ignore_errors=True)
        return build()


def build_panel(model: Any, images: Sequence[tuple[str, Any]], *, key: str = "atlas-build",
                layers: Optional[Sequence[str]] = None, picker_key: str = "atlas") -> Optional[Atlas]:
    """A button that builds a small atlas of ``images`` (the uploads) with a progress bar; returns it when built."""
    if not images:
        st.caption("Upload images (or a ZIP of a folder) to build an atlas of them here.")
        return None
    top = min(PAGE_TOP, len(images))
    st.caption(f"An atlas built here keeps each channel's top {PAGE_TOP} images; the command "
               f"`python -m vizlib.atlas build` keeps {COMMAND_TOP} unless `--top` says otherwise.")
    if not st.button(f"Build an atlas of the {len(images)} uploaded images", key=key):
        return st.session_state.get(f"{key}-built")
    bar = st.progress(0.0, text="Reading the images…")

    def show(done: int, total: int) -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"{done} of {total} images")

    try:
        atlas = build_small(model, images, layers=layers, top=top, progress=show)
    except InputError as exc:
        bar.empty()
        st.error(str(exc))
        return None
    bar.progress(1.0, text=f"Done: {atlas.manifest['counts']['images']} images")
    st.session_state[f"{key}-built"] = atlas
    remember(f"built:{hashlib.sha256(str(atlas.directory).encode()).hexdigest()[:16]}",
             f"Built here: {atlas.manifest['counts']['images']} uploaded images (top {atlas.top_k})", atlas,
             key=picker_key)
    st.rerun()  # the picker now lists and names the new atlas
    return atlas


# --------------------------------------------------------------------------- the whole panel


def atlas_panel(model: Any, uploads: Sequence[tuple[str, str, Any]], *, layer: str, channel: int,
                key: str = "atlas", name: Optional[str] = None) -> Optional[dict]:
    """Open or build an atlas, then show ``layer``/``channel``'s top images; returns the clicked item.

    ``uploads`` are the page's uploaded images as ``(key, name, PIL image)``.
    ``name`` preselects an atlas under the root (from the link).
    """
    left, right = st.columns([3, 2])
    with left:
        atlas = choose_atlas(model, key=key, name=name)
    with right:
        with st.expander("Build one from your uploads", expanded=atlas is None and bool(uploads)):
            build_panel(model, [(n, img) for _, n, img in uploads], key=f"{key}-build", picker_key=key)
    if atlas is None:
        return None
    _open_on_most_active(atlas, layer, channel, key=key, name=name)
    return show_top(atlas, layer, channel, key=f"{key}-top")


def _open_on_most_active(atlas: Atlas, layer: str, channel: int, *, key: str, name: Optional[str]) -> None:
    """The first time an atlas (and layer) is shown, open it on its most active live channel.

    Kept as is only when a link named this atlas and a channel that is live in it (it reopens that view).
    The page's channel widget is already drawn, so the jump is asked for (:func:`apply_jump`) and the page rerun.
    """
    if layer not in atlas.layers:
        return
    picked = st.session_state.get(f"{key}-name")
    ident = f"{picked}|{Path(atlas.directory).name}|{layer}"
    if st.session_state.get(f"{key}-opened") == ident:
        return
    st.session_state[f"{key}-opened"] = ident
    peaks = channel_peaks(atlas, layer)
    live = 0 <= channel < len(peaks) and channel not in dead_channels(peaks)
    if live and name and picked == name:
        return  # a link to this atlas and channel: reopen exactly that
    best = most_active(peaks)
    if best is not None and best != channel:
        st.session_state["_atlas_goto"] = best
        st.rerun()


def chosen_name(key: str = "atlas") -> str:
    """The atlas picked under the root, for the link ("" for none, or one uploaded or built in this session)."""
    value = st.session_state.get(f"{key}-name")
    return value if isinstance(value, str) and value != UPLOADED and value not in _session_atlases() else ""


def image_from_link(name: str, path: str) -> Any:
    """The picture of ``path`` in the atlas ``name`` under the root (a link's ``source=atlas``); InputError if not there."""
    return open_named(name).picture(path)
