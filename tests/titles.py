"""How the page's tests read a class name in a chart title (the AppTest walk and the browser walk)."""

from __future__ import annotations

import re


def named_in_title(name: str, title: str) -> bool:
    """Whether a chart title names the class ``name``: in full, or, where the page shortened a title
    too long for the chart with "…" (the full one is in its hover), as a cut that is a start of it."""
    name, title = re.sub(r"\s+", " ", name), re.sub(r"\s+", " ", title)
    if name in title:
        return True
    if "…" not in title or " for " not in title:
        return False
    shown = title.split("…", 1)[0].split(" for ", 1)[1].strip(" ,“”\"")
    return len(shown) >= 12 and name.startswith(shown)
