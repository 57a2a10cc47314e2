"""The page's feature visualisation pieces: "What this channel looks for" and a grid's mosaic.

The optimisation takes seconds (the bundled model) to minutes (VGG16's last
layer), so it never runs in the script: each request becomes a
:class:`vizlib.featvis.Job` in a background thread, shared by every session
asking for the same thing, and the page shows a progress bar redrawn by a
fragment that reruns on its own (``st.fragment(run_every=...)``). Other
controls stay usable; when the job ends the fragment asks for one full rerun
and the result is drawn in place. Finished images are also on disk
(:class:`vizlib.featvis.DiskCache`), so a restart or another session gets
them at once.

Used from the views (app code)::

    from ui import featvis as fv_ui
    show_detail(m, info, maps, channel, view_img,
                extra=lambda: fv_ui.what_it_looks_for(m, info, channel, maps))
    fv_ui.feature_mosaic(m, info, shown_channels, labels=labels, highlight=channel,
                         on_select=lambda: on_grid_click("fv-grid-last", "inspect", info.name),
                         key="fv-grid-last", reference=maps.mean(axis=(0, 1)))
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Optional, Sequence

import numpy as np
import streamlit as st

from vizlib.errors import InputError
from vizlib.explain import GradientsUnsafe
from vizlib.featvis import Cancelled, FeatureVisualization, Job, feature_grid, feature_png
from vizlib.figures import png_data_uri
from ui.state import fragment

#: Seconds between progress redraws while a job runs.
POLL_SECONDS = 1.0
#: How long a request waits for its job before showing a progress bar (a disk-cache hit is faster).
QUICK_SECONDS = 0.3
#: Optimisation steps: the detail shows one channel; a grid mosaic has many channels, so fewer steps each.
DETAIL_STEPS: Optional[int] = None  # vizlib's default
GRID_STEPS = 128
#: Jobs remembered (running or finished) across sessions.
MAX_JOBS = 24
#: A job no page has polled for this long stops (its visitor left); finished channels stay cached.
ABANDON_SECONDS = 30.0
DETAIL_PX = 224

_JOBS: "OrderedDict[tuple, Job]" = OrderedDict()
_JOBS_LOCK = threading.Lock()


def job_for(m: Any, layer: str, channels: Sequence[int], *, steps: Optional[int] = None, size: Any = None,
            seed: int = 0, slot: Optional[str] = None, cell: Optional[tuple[int, int]] = None,
            method: str = "default") -> Job:
    """The job computing these visualisations: an existing one (any session's) or a new one.

    ``slot`` names a place on this session's page (e.g. ``"detail"``): when the
    same slot asks for something else, its previous job is cancelled unless it
    finished, so a user clicking through channels doesn't queue a job per click.
    """
    key = (str(m.key), str(layer), tuple(int(c) for c in channels), steps,
           None if size is None else str(size), int(seed), cell, method)
    with _JOBS_LOCK:
        job = _JOBS.get(key)
        if job is not None and job.state in ("cancelled", "abandoned"):
            job = None
        if job is None:
            job = Job(m, layer, list(key[2]), size=size, steps=steps, seed=seed, abandon_after=ABANDON_SECONDS,
                      cell=cell, method=method)
            _JOBS[key] = job
        job.touch()
        _JOBS.move_to_end(key)
        while len(_JOBS) > MAX_JOBS:
            old_key = next(iter(_JOBS))
            old = _JOBS.pop(old_key)
            if not old.done:
                old.cancel()
    if slot is not None:
        mine = st.session_state.setdefault("_featvis_slots", {})
        previous = mine.get(slot)
        if previous is not None and previous != key:
            with _JOBS_LOCK:
                stale = _JOBS.get(previous)
            if stale is not None and not stale.done and stale is not job:
                stale.cancel()
        mine[slot] = key
    return job


def _progress_text(job: Job, what: str) -> str:
    if job.state == "queued":
        return f"{what}: waiting for another visualisation to finish…"
    if job.state == "paused":
        return f"{what}: paused at step {job.steps_done} of {job.steps_total} while a smaller one runs…"
    if job.steps_done == 0 and job.preview is not None:  # the sketch runs before the first step
        return f"{what}: a quick first sketch while the optimisation starts…"
    text = f"{what}: step {min(job.steps_done, job.steps_total)} of {job.steps_total}"
    left = job.seconds_left()
    if left is not None:
        text += f", about {left:.0f} s left" if left < 90 else f", about {left / 60:.0f} min left"
    return text


def show_when_ready(job: Job, draw: Callable[[FeatureVisualization], None], what: str) -> None:
    """``draw(result)`` if the job has finished; otherwise a progress bar polled by a fragment.

    The fragment reruns every :data:`POLL_SECONDS`; when the job ends it asks
    for one full rerun, which finds the job done and draws the result here.
    """
    if job.done or job.wait(QUICK_SECONDS):
        error = job.error()
        if isinstance(error, Cancelled):
            st.caption(f"{what}: stopped.")  # only shown if a job stops between polls; a new request restarts it
        elif isinstance(error, (InputError, GradientsUnsafe)):
            st.info(str(error))
        elif error is not None:
            st.warning(f"{what} failed ({type(error).__name__}). Try another channel or model.")
        else:
            draw(job.result())
        return

    def poll() -> None:
        job.touch()
        if job.done:
            st.rerun()
        st.progress(job.fraction, text=_progress_text(job, what))
        shown = job.preview
        if shown is not None and len(shown):
            note = ("first sketch (no transforms yet); the visualisation itself follows" if job.steps_done == 0
                    else "so far: the strongest image yet, refined while you watch")
            # Inline, not st.image: a media file replaced on every poll can be gone (404) by the time
            # the browser asks for it; a data URI travels with the message that shows it.
            big = _enlarged(shown[0], DETAIL_PX // 2)
            rgb = np.repeat(big[..., None], 3, axis=-1) if big.ndim == 2 else big
            st.html(f'<figure style="margin:0"><img alt="the visualisation so far" src="{png_data_uri(rgb)}" '
                    f'width="{rgb.shape[1]}" height="{rgb.shape[0]}" style="image-rendering:pixelated">'
                    f'<figcaption style="font-size:0.85em;opacity:0.7">{note}</figcaption></figure>')

    fragment(poll, run_every=POLL_SECONDS)()  # guarded as the page is


def _enlarged(image: np.ndarray, px: int) -> np.ndarray:
    """(H, W, C) uint8 -> 2D grey or RGB, enlarged a whole number of times to about ``px`` (crisp pixels)."""
    k = max(1, int(round(px / max(image.shape[:2]))))
    big = np.repeat(np.repeat(image, k, axis=0), k, axis=1)
    return big[..., 0] if big.shape[2] == 1 else big


def parse_cell(cell: Any) -> Optional[tuple[int, int]]:
    """The page's ``cell`` state ("row,col" or a pair) as (row, col), or None."""
    if cell is None or cell == "":
        return None
    try:
        parts = [int(v) for v in (str(cell).split(",") if isinstance(cell, str) else cell)]
    except (TypeError, ValueError):
        return None
    return (parts[0], parts[1]) if len(parts) == 2 else None


def score_lines(vis: FeatureVisualization, i: int = 0) -> list[str]:
    """Markdown lines: the image's strength against the strongest sample image, and its rank in the layer."""
    vs = vis.vs_samples()
    rank = vis.rank("fired")[i]
    n = vis.stats["fired"].shape[1]
    lines = []
    if vs is not None:
        lines.append(f"**{vs[i]:.1f}×** the strongest sample image's activation of this "
                     f"{'cell' if vis.cell is not None else 'channel'}")
    lines.append(f"rank **{rank} of {n}** channels of the layer on this image"
                 + (" (no other channel fires more on it)" if rank == 1 else " (other channels fire more on it)"))
    return lines


def comparison(vis: FeatureVisualization, maps: Optional[np.ndarray]) -> str:
    """Markdown: the score (vs the strongest sample, rank in the layer) and the channel on the page's image."""
    c = vis.channels[0]
    own = float(vis.own("fired")[0])
    lines = score_lines(vis)
    if maps is not None and vis.cell is None:
        mine = float(np.maximum(np.asarray(maps)[:, :, c], 0).mean())
        if mine > 0 and own > 0:
            lines.append(f"on your image: {mine:.3g}, so the made image excites it **{own / mine:.1f}×** as much")
        else:
            lines.append(f"on your image: {mine:.3g}")
    return "  \n".join(lines)


def what_it_looks_for(m: Any, info: Any, channel: int, maps: Optional[np.ndarray] = None, *,
                      steps: Optional[int] = DETAIL_STEPS, key: str = "featvis-detail", cell: Any = None) -> None:
    """The detail's "What this channel looks for": an image made to excite the channel, and its score.

    ``maps`` are the layer's maps (H, W, C) for the image on the page, for the
    comparison. ``cell`` (the page's clicked map cell, "row,col"): offer "this
    cell only" (the neuron objective) beside the whole channel.
    """
    st.markdown("**What this channel looks for**")
    where = parse_cell(cell)
    target = None
    if where is not None:
        choice = st.radio("Optimise for", ["the whole channel", f"cell ({where[0]}, {where[1]}) only"],
                          horizontal=True, key=f"{key}-target")
        target = where if choice != "the whole channel" else None
    job = job_for(m, info.name, [int(channel)], steps=steps, slot=key, cell=target)

    def draw(vis: FeatureVisualization) -> None:
        if vis.flat()[0]:
            st.info(f"Nothing moves channel {channel}: its map stays one value whatever the input (a kernel of "
                    "zeros, or a unit that never switches on), so there is no pattern to show.")
            return
        failed = vis.failed()[0]
        col_img, col_text = st.columns([1, 1])
        h, w = vis.size
        what = f"cell ({vis.cell[0]}, {vis.cell[1]}) of channel {channel}" if vis.cell else f"channel {channel}"
        col_img.image(_enlarged(vis.images[0], DETAIL_PX),
                      caption=(f"FAILED: not what {what} looks for" if failed else f"made for {what}")
                      + f" · {h}×{w} px")
        with col_text:
            if failed:
                st.warning("This optimisation failed its own check (a real image excites the channel more, or "
                           "another channel responds more to it), so it does not show what the channel looks for.")
            st.markdown(comparison(vis, maps))
            st.download_button("Download PNG", mime="image/png",  # for slides: enlarged, titled
                               data=feature_png(vis, title=f"{m.label} · {info.name}, channel {channel}: "
                                                           "an image made to excite it"),
                               file_name=f"{info.name.replace('/', '_')}_channel{channel}.png",
                               key=f"{key}-png")
        st.caption("Made by gradient ascent from noise: Fourier-space pixels (decorrelated colour for RGB), the "
                   "model's own preprocessing, jitter, scaling and rotation scaled to the image for the first half, "
                   "then the pixels themselves (Olah et al., Distill 2017).")
        if st.checkbox("Compare with plain gradient ascent", key=f"{key}-plain",
                       help="The literature's baseline on this same channel and number of steps: the pixels "
                            "themselves, from flat grey, no transforms. Takes about as long again."):
            plain = job_for(m, info.name, [int(channel)], steps=steps, slot=f"{key}-plain", cell=target,
                            method="plain")
            show_when_ready(plain, lambda base: baseline(vis, base), "Plain gradient ascent on the same channel")

    show_when_ready(job, draw, f"Making an image for channel {channel}")


def baseline_lines(vis: FeatureVisualization, base: FeatureVisualization) -> list[str]:
    """Markdown lines: plain gradient ascent's image against the method's, on the same channel and steps."""
    mine, theirs = float(vis.own("fired")[0]), float(base.own("fired")[0])
    rank = base.rank("fired")[0]
    n = base.stats["fired"].shape[1]
    lines = [f"plain gradient ascent, {base.steps} steps: rank **{rank} of {n}**"
             + (" (no other channel fires more on it)" if rank == 1 else
                f" ({rank - 1} other channel{'s' if rank > 2 else ''} fire{'' if rank > 2 else 's'} more on it)")]
    if theirs <= 0:
        lines.append("it did not make the channel fire at all")
    elif mine <= 0:
        lines.append("it makes the channel fire; the method's image does not")
    else:
        ratio = mine / theirs
        lines.append(f"the method's image reaches **{ratio:.2f}×** its activation")
        if ratio < 1.0:
            lines.append("plain ascent is stronger here: its pixel-level patterns are what the method's transforms "
                         "hold back, to keep an image a person can read (Olah et al., Distill 2017)")
    return lines


def baseline(vis: FeatureVisualization, base: FeatureVisualization) -> None:
    """Plain gradient ascent's image beside its numbers (drawn under the method's own image)."""
    col_img, col_text = st.columns([1, 2])
    col_img.image(_enlarged(base.images[0], DETAIL_PX // 2), caption="plain gradient ascent")
    col_text.markdown("  \n".join(baseline_lines(vis, base)))


def feature_mosaic(m: Any, info: Any, channels: Sequence[int], *, labels: Optional[Sequence[str]] = None,
                   highlight: Optional[int] = None, reference: Optional[np.ndarray] = None,
                   on_select: Optional[Callable[[], None]] = None, title: Optional[str] = None,
                   steps: Optional[int] = GRID_STEPS, key: str = "featvis-grid", width_hint: int = 380,
                   chart_config: Optional[dict] = None) -> None:
    """A grid's channels as feature visualisations: same layout, labels and clicking as the activation grid.

    ``reference`` is the layer's mean activation per channel on the page's
    image (``maps.mean(axis=(0, 1))``), for the hover's comparison.
    ``on_select`` is the grid's click handler (the chart's key is ``key``).
    """
    channels = [int(c) for c in channels]
    job = job_for(m, info.name, channels, steps=steps, slot=key)

    def draw(vis: FeatureVisualization) -> None:
        fig = feature_grid(vis, labels=labels, reference=reference, highlight=highlight, width_hint=width_hint,
                           title=title or f"What these channels look for: <b>{info.name}</b>")
        if on_select is not None:
            st.plotly_chart(fig, key=key, on_select=on_select, selection_mode="points", config=chart_config or {})
        else:
            st.plotly_chart(fig, key=key, config=chart_config or {})
        flat = [c for c, f in zip(vis.channels, vis.flat()) if f]
        note = f" Channels {', '.join(map(str, flat))} never respond (grey)." if flat else ""
        failed = [c for c, f, fl in zip(vis.channels, vis.failed(), vis.flat()) if f and not fl]
        if failed:
            note += (f" FAILED for channels {', '.join(map(str, failed))} (weaker than a sample image, or not "
                     "rank 1 in the layer): those images don't show what the channel looks for.")
        st.caption(f"Images made to excite each of these {len(channels)} channels, optimised together "
                   f"({vis.steps} steps, {vis.size[0]}×{vis.size[1]} px). Hover for how strongly each "
                   f"excites its channel; click one to inspect that channel.{note}")
        st.download_button("Download PNG", key=f"{key}-png", mime="image/png",
                           file_name=f"{info.name.replace('/', '_')}_feature_visualisations.png",
                           data=feature_png(vis, labels=labels, title=f"{m.label} · {info.name}"))

    show_when_ready(job, draw, f"Making images for {len(channels)} channels of {info.name}")
