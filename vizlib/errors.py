"""The one exception whose message is fit to show a user."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


class InputError(ValueError):
    """Something the user supplied (an image, a model, a layer name, a link) is unusable.

    The message says what was wrong and what to do about it, in words fit for
    the page: the app shows it verbatim with ``st.error`` and keeps running.
    It names no path of the server (log those instead). Where the remedy reads
    differently on the command line (a flag, not a widget), ``cli`` is that
    wording; :attr:`cli_message` gives it, or the message when there is none.
    Anything else that escapes ``vizlib`` is a bug.
    """

    def __init__(self, message: str = "", *args: object, cli: Optional[str] = None) -> None:
        super().__init__(message, *args)
        self.cli = cli

    @property
    def cli_message(self) -> str:
        """The message as a command line shows it (flags, not widgets)."""
        return self.cli or str(self)


def hide_paths(text: str, *paths: "str | os.PathLike[str]") -> str:
    """``text`` (e.g. a library's exception message) with each of ``paths`` and its folders cut to the
    file's own name, so a message shown to a visitor names no folder of the server."""
    for p in paths:
        path = Path(p)
        for form in {str(path), str(path.resolve()) if path.exists() else str(path)}:
            text = text.replace(form, path.name)
        for parent in (path.parent, path.resolve().parent if path.exists() else path.parent):
            if str(parent) not in ("", ".", "/"):
                text = text.replace(str(parent) + os.sep, "")
    return text
