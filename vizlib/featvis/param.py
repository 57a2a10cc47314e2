"""Parameterisations: how the optimised numbers become an image (Lucid's ``param``).

Naive gradient ascent on pixels drifts into high-frequency noise, because
every pixel learns at the same rate. Lucid's answer, used here:

* a **Fourier-space image** whose spectrum is scaled by 1/f, so that every
  frequency learns at a similar rate and low frequencies are not drowned;
* **decorrelated colour** (the square root of ImageNet's colour covariance)
  for RGB models; a greyscale model gets one channel, nothing to decorrelate;
* a **sigmoid** to valid pixels (0..1), which the model sees through its own
  preprocessing (:mod:`vizlib.featvis.graph`).

All functions here are pure: numpy in, numpy out, or a TensorFlow function of
the spectrum. The starting spectrum comes from a generator of its own per
``(seed, channel)``, so a channel's image does not depend on its batch-mates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Lucid's colour decorrelation (square root of ImageNet's colour covariance, from its SVD).
COLOR_SQRT = np.asarray([[0.26, 0.09, 0.02],
                         [0.27, 0.00, -0.05],
                         [0.27, -0.09, 0.03]], dtype=np.float32)
COLOR = COLOR_SQRT / np.max(np.linalg.norm(COLOR_SQRT, axis=0))
#: The spectrum's image is divided by this before the sigmoid (Lucid's 4).
SPECTRUM_DIVISOR = 4.0
#: Standard deviation of the starting spectrum (Lucid: 0.01).
INITIAL_SD = 0.01


def frequency_scale(h: int, w: int) -> np.ndarray:
    """Lucid's 1/f scaling of the spectrum of an ``h x w`` image: float32 ``(h, w // 2 + 1)``."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    freqs = np.sqrt(fx * fx + fy * fy)
    scale = 1.0 / np.maximum(freqs, 1.0 / max(w, h))
    return (scale * np.sqrt(w * h)).astype(np.float32)


def spectrum_shape(c: int, h: int, w: int) -> tuple[int, int, int, int]:
    """Shape of one image's parameters: (channels, h, w // 2 + 1, real/imaginary)."""
    return (int(c), int(h), int(w) // 2 + 1, 2)


def param_shape(c: int, h: int, w: int, fourier: bool = True) -> tuple[int, ...]:
    """Shape of one image's parameters: a spectrum, or pixels (h, w, channels)."""
    return spectrum_shape(c, h, w) if fourier else (int(h), int(w), int(c))


def initial_spectrum(seed: int, channel: int, c: int, h: int, w: int) -> np.ndarray:
    """A small random spectrum from a generator of its own per ``(seed, channel)``."""
    rng = np.random.default_rng([int(seed), int(channel), 104729])
    return (INITIAL_SD * rng.standard_normal(spectrum_shape(c, h, w))).astype(np.float32)


def initial_params(seed: int, channel: int, c: int, h: int, w: int, fourier: bool = True) -> np.ndarray:
    """The starting parameters: a small random spectrum, or mid-grey pixels with a little noise."""
    if fourier:
        return initial_spectrum(seed, channel, c, h, w)
    rng = np.random.default_rng([int(seed), int(channel), 104729])
    return (0.5 + INITIAL_SD * rng.standard_normal((h, w, c))).astype(np.float32)


def identity(params: Any) -> Any:
    """The pixel parameterisation: the parameters are the image (0..1, kept there by clipping)."""
    return params


def fourier_image(c: int, h: int, w: int, *, decorrelate: bool = True) -> Any:
    """A TensorFlow function: spectra ``(B, C, h, w//2+1, 2)`` -> images ``(B, h, w, C)`` in 0..1."""
    import tensorflow as tf

    scale = tf.constant(frequency_scale(h, w))
    color = tf.constant(COLOR.T)

    def pixels(spec: Any) -> Any:
        z = tf.complex(spec[..., 0] * scale, spec[..., 1] * scale)
        img = tf.signal.irfft2d(z, fft_length=[h, w])  # (B, C, h, w)
        img = tf.transpose(img, [0, 2, 3, 1]) / SPECTRUM_DIVISOR
        if c == 3 and decorrelate:
            img = tf.reshape(tf.reshape(img, [-1, 3]) @ color, tf.shape(img))
        return tf.sigmoid(img)

    return pixels

