"""The bundled sample images and their provenance (scikit-image's data module, re-encoded)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vizlib.errors import InputError
from vizlib.images.decode import load_image

__all__ = ["SAMPLES", "SAMPLES_DIR", "Sample", "load_sample", "sample_path"]

#: Folder holding the bundled sample images.
SAMPLES_DIR = Path(__file__).resolve().parent.parent.parent / "assets" / "samples"


@dataclass(frozen=True)
class Sample:
    """A bundled sample image and its provenance (from scikit-image's data, re-encoded)."""

    name: str
    filename: str
    title: str
    source: str
    licence: str


_PD = "Public domain"
_CC0 = "CC0"

SAMPLES: dict[str, Sample] = {
    s.name: s
    for s in (
        Sample("astronaut", "astronaut.jpg", "Astronaut Eileen Collins (NASA portrait)", "NASA", _PD),
        Sample("astronaut_face", "astronaut_face.jpg", "Astronaut's face (crop of the astronaut)", "NASA", _PD),
        Sample("brick", "brick.jpg", "Brick texture", "CC0Textures", _CC0),
        Sample("camera", "camera.jpg", "Man with a camera", "Lav Varshney", _CC0),
        Sample("cat", "cat.jpg", 'Cat ("Chelsea")', "Stefan van der Walt", _CC0),
        Sample("coffee", "coffee.jpg", "Cup of coffee", "Rachel Michetti", _CC0),
        Sample("coins", "coins.jpg", "Greek coins", "Brooklyn Museum", "No known copyright restrictions"),
        Sample("grass", "grass.jpg", "Grass texture", "CC0Textures", _CC0),
        Sample("gravel", "gravel.jpg", "Gravel texture", "CC0Textures", _CC0),
        Sample("horse", "horse.png", "Horse silhouette", "Andreas Preuss (openclipart)", _CC0),
        Sample("hubble", "hubble.jpg", "Hubble deep field", "NASA", _PD),
        Sample("retina", "retina.jpg", "Human retina (fundus photo)", "Wikimedia Commons", _CC0),
        Sample("rocket", "rocket.jpg", "SpaceX rocket launch", "SpaceX", _PD),
    )
}


def sample_path(name: str) -> Path:
    """Path of the bundled sample ``name`` (a key of :data:`SAMPLES`)."""
    sample = SAMPLES.get(name)
    if sample is None:
        raise InputError(
            f'There is no sample image called "{name}". Choose one of: {", ".join(sorted(SAMPLES))}.'
        )
    return SAMPLES_DIR / sample.filename


@functools.cache
def _decoded_sample(name: str) -> Image.Image:
    return load_image(sample_path(name), name=SAMPLES[name].filename)


def load_sample(name: str) -> Image.Image:
    """The bundled sample ``name`` as an RGB image (decoded once; each call gets its own copy)."""
    sample_path(name)  # validates the name before touching the cache
    return _decoded_sample(name).copy()
