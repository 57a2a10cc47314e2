"""Feature visualisation: the image a channel responds to most.

A channel's map on one image shows *where* its pattern occurs in that image;
an input optimised to excite the channel shows *what* the pattern is
(activation maximisation: Olah, Mordvintsev and Schubert, "Feature
Visualization", Distill 2017; OpenAI Microscope; Lucid)::

    import vizlib
    m = vizlib.load_model("emotion_cnn")
    imgs = vizlib.feature_visualization(m, "conv2d_7", [0, 3, 6])   # uint8 (3, H, W, 1)

The pieces, each small and composable (Lucent's layout):

* :mod:`~vizlib.featvis.param`: how optimised numbers become an image
  (Fourier space with 1/f scaling, decorrelated colour for RGB, a sigmoid);
* :mod:`~vizlib.featvis.transform`: jitter, scaling and rotation every step;
* :mod:`~vizlib.featvis.objectives`: what is maximised (a channel, one cell);
* :mod:`~vizlib.featvis.redirect`: Lucid's redirected ReLU gradient, scoped
  to one traced graph;
* :mod:`~vizlib.featvis.graph`: the layer's sub-graph, the model's own
  preprocessing in the graph, one compiled step;
* :mod:`~vizlib.featvis.engine`: sizes, batch plans and step-by-step progress
  as operations that run where the model lives (an uploaded model's process);
* :mod:`~vizlib.featvis.rendering`: the public calls and their results;
* :mod:`~vizlib.featvis.cache`, :mod:`~vizlib.featvis.jobs`,
  :mod:`~vizlib.featvis.figures`: the disk cache, background jobs, figures.

All requested channels are optimised as ONE batch (channel ``i`` in row
``i``). Randomness comes from numpy generators seeded by ``seed`` (the
transforms) and by ``(seed, channel)`` (the start image), so a channel's
image does not depend on which other channels share its batch, and results
repeat exactly for a seed. Finished images are cached on disk, keyed by the
weights' digest, the layer, the channel and the settings.
"""

from __future__ import annotations

from vizlib.featvis.cache import CACHE_MB, DiskCache, cache_dir
from vizlib.featvis.engine import (
    BATCH_BYTES, DEFAULT_MAX_SIDE, DEFAULT_MIN_SIDE, DEFAULT_STEPS, MAX_CHANNELS, MAX_SIDE, MAX_STATES, MAX_STEPS,
    MIN_SIDE, STATE_BYTES, STATS, resolve_size,
)
from vizlib.featvis.figures import feature_grid, feature_png, image_mosaic, image_png
from vizlib.featvis.graph import LEARNING_RATE, MAX_GRAPHS_PER_MODEL, gradients_safe
from vizlib.featvis.jobs import Job
from vizlib.featvis.objectives import HINGE, MARGIN, SIGNED_WEIGHT
from vizlib.featvis.redirect import REDIRECT_STEPS
from vizlib.featvis.rendering import (
    ALGORITHM, CHUNK_SECONDS, Cancelled, FeatureVisualization, ProgressFn, default_size, feature_visualization,
    render,
)

__all__ = [
    "ALGORITHM", "BATCH_BYTES", "CACHE_MB", "CHUNK_SECONDS", "Cancelled", "DEFAULT_MAX_SIDE", "DEFAULT_MIN_SIDE",
    "DEFAULT_STEPS", "DiskCache", "FeatureVisualization", "HINGE", "Job", "LEARNING_RATE", "MARGIN",
    "MAX_CHANNELS", "MAX_GRAPHS_PER_MODEL", "MAX_SIDE", "MAX_STATES", "MAX_STEPS", "MIN_SIDE", "ProgressFn",
    "REDIRECT_STEPS", "SIGNED_WEIGHT", "STATE_BYTES", "STATS", "cache_dir", "default_size", "feature_grid",
    "feature_png", "feature_visualization", "gradients_safe", "image_mosaic", "image_png", "render",
    "resolve_size",
]
