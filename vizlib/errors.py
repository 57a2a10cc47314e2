"""The one exception whose message is fit to show a user."""

from __future__ import annotations


class InputError(ValueError):
    """Something the user supplied (an image, a model, a layer name, a link) is unusable.

    The message says what was wrong and what to do about it, in words fit for
    the page: the app shows it verbatim with ``st.error`` and keeps running.
    Anything else that escapes ``vizlib`` is a bug.
    """
