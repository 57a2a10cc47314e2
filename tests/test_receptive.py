"""One receptive-field engine (issue #19): the atlas's boxes, explain's exact masks and featvis's sizes agree;
atlas manifests written before the engines were merged still open; absurd geometry is refused, bounded."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import vizlib
from vizlib import receptive
from vizlib.errors import InputError


@pytest.fixture(scope="module")
def branchy():
    """Transposed convolution, up-sampling, padding, cropping, dilation and a residual add (old atlas engine
    gave the whole image for most of these)."""
    import keras

    L = keras.layers
    inp = keras.Input((40, 36, 1))
    x = L.Conv2D(4, 3, strides=2, padding="same", name="c1")(inp)
    x = L.ZeroPadding2D(((2, 1), (0, 3)), name="pad")(x)
    x = L.Cropping2D(((1, 2), (3, 0)), name="crop")(x)
    a = L.Conv2D(4, 3, padding="same", dilation_rate=2, name="dil")(x)
    y = L.Add(name="add")([a, x])
    t = L.Conv2DTranspose(4, 3, strides=2, padding="same", name="tconv")(y)
    u = L.UpSampling2D(2, name="up")(L.MaxPooling2D(2, name="pool")(t))
    z = L.Conv2D(2, (3, 2), strides=(2, 3), padding="valid", name="last")(u)
    return keras.Model(inp, z)


def test_atlas_boxes_contain_the_exact_dependence_and_equal_it_inside_the_image(branchy):
    names = ["c1", "pad", "crop", "dil", "add", "tconv", "pool", "up", "last"]
    fields = receptive.receptive_fields(branchy, names)
    for name in names:
        h, w = receptive.spatial_shape(branchy.get_layer(name).output)
        for r, c in ((0, 0), (h // 2, w // 3), (h - 1, w - 1)):
            rows, cols, _ = receptive.dependence_masks(branchy, name, r, c)
            exact = receptive.box_of(rows, cols)
            box = fields[name].box(r, c)
            assert fields[name].y is not None and fields[name].x is not None, name
            if exact[2] > exact[0] and exact[3] > exact[1]:  # not a cell of pure padding
                assert box[0] <= exact[0] and box[1] <= exact[1] and box[2] >= exact[2] and box[3] >= exact[3]
                if name in ("c1", "pad", "crop", "dil", "add") and (r, c) == (h // 2, w // 3):
                    assert box == exact, (name, r, c)  # at the border a box may include zero padding's reach
    rows = np.array([0, 3, 3, 7])
    cols = np.array([1, 0, 2, 2])
    t, le, b, ri = fields["add"].boxes(rows, cols)
    assert [tuple(v) for v in zip(t, le, b, ri)] == [fields["add"].box(r, c) for r, c in zip(rows, cols)]


def test_explain_and_the_atlas_give_the_same_box(bundled):
    names = ["conv2d_1", "max_pooling2d_1", "conv2d_5"]
    fields = receptive.receptive_fields(bundled.model, names)
    for name in names:
        h, w, _ = vizlib.find_layer(bundled, name).output_shape
        for r, c in ((0, 0), (h // 2, w // 2), (h - 1, w - 2)):
            assert vizlib.receptive_field(bundled, name, r, c) == fields[name].box(r, c)


def test_manifests_written_before_the_merge_still_open():
    """The manifest stores per axis [jump, lo, hi] (cell i sees lo + i*jump .. hi + i*jump) as floats."""
    # As the old engine wrote them: a 3x3 valid conv (jump 1, pixels 0..2), then a 2x2 pool (jump 2, 0..3).
    old = {"y": [1.0, 0.0, 2.0], "x": [2.0, 0.0, 3.0], "input_size": [10, 12]}
    rf = receptive.ReceptiveField.from_json(json.loads(json.dumps(old)))
    assert rf.box(5, 2) == (5, 4, 8, 8)
    assert rf.box(9, 5) == (9, 10, 10, 12)  # clipped to the image
    assert rf.to_json() == old
    half = receptive.ReceptiveField.from_json({"y": [0.5, -0.5, 1.0], "x": None, "input_size": [8, 8]})
    assert half.box(3, 0) == (1, 0, 4, 8)  # x unknown: the whole width
    for bad in ({"y": [0.0, 0.0, 1.0], "x": None, "input_size": [8, 8]},
                {"y": [1.0, 5.0, 1.0], "x": None, "input_size": [8, 8]},
                {"y": [float("nan"), 0.0, 1.0], "x": None, "input_size": [8, 8]},
                {"y": [1e300, 0.0, 1.0], "x": None, "input_size": [8, 8]},
                {"y": None, "x": None, "input_size": [0, 8]}):
        with pytest.raises(ValueError):
            receptive.ReceptiveField.from_json(bad)


def test_absurd_strides_and_windows_are_refused_with_a_message():
    import keras

    L = keras.layers
    inp = keras.Input((16, 16, 1))
    x = inp
    for i in range(4):  # each pooling 4096 wide and apart: a jump of 4096**4 input pixels per cell
        x = L.MaxPooling2D(pool_size=2, strides=4096, padding="same", name=f"p{i}")(x)
    far = keras.Model(inp, x)
    with pytest.raises(InputError, match="too extreme"):
        receptive.receptive_fields(far, ["p3"])
    with pytest.raises(InputError, match="too extreme"):
        vizlib.receptive_field_info(far, "p3", 0, 0)
    wide = keras.Model(inp, L.MaxPooling2D(pool_size=(5000, 1), strides=1, padding="same", name="wide")(inp))
    with pytest.raises(InputError, match="window size of 5000"):
        receptive.receptive_fields(wide, ["wide"])
    with pytest.raises(InputError, match="window size of 5000"):
        vizlib.receptive_field(wide, "wide", 3, 3)
    # A legal but large dilation stays cheap: only the taps that land inside the map are walked.
    dil = keras.Model(inp, L.Conv2D(1, 3, padding="same", dilation_rate=4000, name="d")(inp))
    assert vizlib.receptive_field(dil, "d", 5, 6) == (5, 6, 6, 7)


def test_featvis_imports_nothing_from_the_atlas():
    code = ("import sys, vizlib.featvis, vizlib.receptive; "
            "print(sorted(m for m in sys.modules if m.startswith('vizlib.atlas')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
