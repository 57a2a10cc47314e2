"""Objectives: what an image is optimised for (Lucid's ``objectives``), per batch row.

Every objective takes the layer's activations ``(B, H, W, C)`` for a batch
whose row ``i`` is made for ``channels[i]`` and returns one number per row
(higher is better).

* :func:`channel`: how strongly the channel fires over its whole map: the mean
  of its positive part (for a ReLU layer Lucid's mean activation; for a linear
  one, such as a conv before its BatchNormalization, it turns the trivial
  optimum, a uniformly bright or dark image, into the pattern the kernel
  matches), plus a little of the plain mean (a gradient even where the channel
  is off), minus a hinge when another channel of the layer fires within
  :data:`MARGIN` as much: the image should show what makes *this* channel
  fire, not what makes the whole layer fire.
* :func:`neuron`: the same, for one cell of the map ("what would make *this*
  position fire"): the channel's value at ``(row, col)``.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

#: own + SIGNED_WEIGHT * mean(a_c) - HINGE * relu(rival - MARGIN * own), where own = mean(relu(a_c)) and
#: rival = the largest mean(relu(a_d)) of the layer's other channels.
SIGNED_WEIGHT = 0.1
MARGIN = 0.8
HINGE = 3.0


def _rival(fired: Any, channels: Any, layer_channels: int) -> Any:
    """Per row, the largest ``fired`` of the layer's other channels (0 for a one-channel layer)."""
    import tensorflow as tf

    mask = tf.one_hot(channels, layer_channels, on_value=True, off_value=False)
    rival = tf.reduce_max(tf.where(mask, tf.fill(tf.shape(fired), -np.inf), fired), axis=1)
    return tf.where(tf.math.is_finite(rival), rival, tf.zeros_like(rival))


def channel(acts: Any, channels: Any, layer_channels: int, hinge: float = HINGE) -> Any:
    """Per row: how strongly the channel fires, less a hinge when another channel comes close."""
    import tensorflow as tf

    fired = tf.reduce_mean(tf.nn.relu(acts), axis=[1, 2])  # (B, C)
    own = tf.gather(fired, channels, axis=1, batch_dims=1)
    signed = tf.reduce_mean(tf.gather(acts, channels, axis=3, batch_dims=1), axis=[1, 2])
    if not hinge:
        return own + SIGNED_WEIGHT * signed
    return own + SIGNED_WEIGHT * signed - hinge * tf.nn.relu(_rival(fired, channels, layer_channels) - MARGIN * own)


def neuron(acts: Any, channels: Any, layer_channels: int, cell: tuple[int, int], hinge: float = HINGE) -> Any:
    """Per row: the channel's value at map position ``cell`` (row, col), less a hinge for rivals there."""
    import tensorflow as tf

    r, c = int(cell[0]), int(cell[1])
    here = acts[:, r, c, :]  # (B, C)
    signed = tf.gather(here, channels, axis=1, batch_dims=1)
    fired = tf.nn.relu(here)
    own = tf.nn.relu(signed)
    if not hinge:
        return own + SIGNED_WEIGHT * signed
    return own + SIGNED_WEIGHT * signed - hinge * tf.nn.relu(_rival(fired, channels, layer_channels) - MARGIN * own)


def objective(acts: Any, channels: Any, layer_channels: int, cell: Optional[tuple[int, int]] = None,
              hinge: float = HINGE) -> Any:
    """The channel objective, or the neuron objective when ``cell`` is given."""
    if cell is None:
        return channel(acts, channels, layer_channels, hinge)
    return neuron(acts, channels, layer_channels, cell, hinge)
