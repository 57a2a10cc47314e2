"""Plotly clicks as Streamlit reports them: one parser for every chart that can be clicked.

``st.plotly_chart(..., on_select=...)`` leaves its event in ``st.session_state[key]``
(a dict) or returns it (an object with ``.selection``); both carry the clicked
points, each with the ``customdata`` the figure put on it.
"""

from __future__ import annotations

from typing import Any, Optional


def selected_points(event: Any) -> list[dict]:
    """The clicked points of a Plotly selection event (dict or attribute form); [] for anything else."""
    try:
        points = event["selection"]["points"] if isinstance(event, dict) else event.selection.points
    except (AttributeError, KeyError, TypeError):
        return []
    return [p for p in (points or []) if isinstance(p, dict)]


def clicked_data(event: Any) -> Optional[Any]:
    """The ``customdata`` of the first clicked point that has one (its first item if it is a list), else None."""
    for point in selected_points(event):
        data = point.get("customdata")
        if isinstance(data, (list, tuple)):
            data = data[0] if data else None
        if data is not None:
            return data
    return None
