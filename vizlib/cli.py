"""What every command line (``python -m vizlib.atlas``, ``python -m vizlib.featvis``) does with an error.

A user's mistake (:class:`~vizlib.errors.InputError`, or a path the OS refuses) is one line and exit 2;
anything else one line and exit 1, the traceback only with ``CNN_VIZ_DEBUG=1``; Ctrl-C says what is kept.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Optional


def guarded(run: Callable[[], int], *, interrupted: str) -> int:
    """``run()``'s exit status, or the status and one line on stderr for whatever it raised."""
    from vizlib.errors import InputError
    from vizlib.settings import debug

    from vizlib.tfsetup import quiet_command_line

    quiet_command_line()
    try:
        return run()
    except InputError as exc:
        print(f"error: {exc.cli_message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {interrupted}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for the user, the traceback only on request
        if debug():
            raise
        if isinstance(exc, OSError) and exc.filename is not None:
            # A path the user named (or one under it) can't be read or written: say which, and why.
            print(f"error: cannot use {os.fspath(exc.filename)}: {exc.strerror or type(exc).__name__}",
                  file=sys.stderr)
            return 2
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        print(f"error: unexpected {type(exc).__name__}{': ' + first if first else ''} "
              "(set CNN_VIZ_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 1


def names(text: Optional[str], option: str) -> Optional[list[str]]:
    """The comma-separated names given to ``option`` (e.g. ``--layers``), or None when it was not given.

    Given with no name in it (``--layers ""``, ``--layers ,``) is a mistake, not a request for the default.
    """
    from vizlib.errors import InputError

    if text is None:
        return None
    found = [s.strip() for s in text.split(",") if s.strip()]
    if not found:
        raise InputError(f"{option} is empty: give comma-separated names, or leave {option} out for the default.")
    return found
