"""Command line: ``avatar3d capture | fit | render | export | demo | eval | view | visemes | verify | serve``.

Exit codes: 0 success, 2 bad input (one-line error naming the problem), 1 an internal error (one
line; ``--debug`` prints the traceback), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
The parser lives in :mod:`.parser`, the commands in :mod:`.commands`.
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback

from ..errors import Avatar3DError
from .commands import COMMANDS
from .parser import UsageError, build_parser, one_line

EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 1, 130, 143


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` and atomic temp cleanup runs."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


def _os_error(e: OSError) -> str:
    what = e.strerror or type(e).__name__
    return f"{what}: {e.filename}" if e.filename else one_line(str(e) or what)


def _fail(message: str, code: int) -> int:
    print(f"avatar3d: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit code (see the module docstring)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        return _fail(f"error: {e}", EXIT_BAD_INPUT)
    try:
        COMMANDS[args.cmd](args)
    except Avatar3DError as e:
        return _fail(f"error: {one_line(e)}", EXIT_BAD_INPUT)
    except OSError as e:  # missing, unreadable or unwritable files, a full disk
        if args.debug:
            traceback.print_exc()
        return _fail(f"error: {_os_error(e)}", EXIT_BAD_INPUT)
    except MemoryError:
        return _fail("error: out of memory (try a smaller --size or a shorter input)", EXIT_BAD_INPUT)
    except KeyboardInterrupt as e:
        term = isinstance(e, _Terminated)
        return _fail("terminated" if term else "interrupted", EXIT_TERMINATED if term else EXIT_INTERRUPTED)
    except Exception as e:  # noqa: BLE001 - the one place that turns a bug into one line
        if args.debug:
            traceback.print_exc()
        return _fail(
            f"error: internal error ({type(e).__name__}: {one_line(e)}); "
            "rerun with --debug for the traceback and report it",
            EXIT_INTERNAL,
        )
    return 0


__all__ = ["main"]
