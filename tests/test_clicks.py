"""One parser for Plotly clicks in the page, one ranking of classes in the library (issue #19)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

import vizlib
from ui.clicks import clicked_data, selected_points
from vizlib.extract import decode, ranked_classes


def test_clicks_in_both_event_shapes_and_malformed_ones():
    as_dict = {"selection": {"points": [{"customdata": [7, "x"]}, {"customdata": 3}]}}
    as_object = SimpleNamespace(selection=SimpleNamespace(points=[{"x": 1}, {"customdata": 5}]))
    assert selected_points(as_dict) == as_dict["selection"]["points"]
    assert clicked_data(as_dict) == 7 and clicked_data(as_object) == 5
    for bad in (None, {}, {"selection": None}, {"selection": {"points": None}}, "text", 3,
                {"selection": {"points": ["not a point", None]}}, SimpleNamespace(selection=None)):
        assert selected_points(bad) == [] and clicked_data(bad) is None


def test_ranked_classes_is_what_decode_and_the_page_show(bundled):
    _, out = vizlib.forward(bundled, [vizlib.load_sample("astronaut_face")], [], predictions=True)
    ranked = ranked_classes(bundled, out, 3)[0]
    probs = out[0] / out[0].sum()
    assert [i for i, _, _ in ranked] == list(np.argsort(-probs, kind="stable")[:3])
    assert [(n, p) for _, n, p in ranked] == decode(bundled, out, 3)[0]
    assert ranked[0][1] == bundled.class_names[ranked[0][0]]
    assert ranked_classes(bundled, np.zeros((1, 1))) == []
