"""Progress bars (rich) for long loops: :func:`track` wraps an iterable, :func:`progress_bar` gives a bar
with several tasks. Both are silent when ``AVATAR3D_QUIET`` is set."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


class _Silent:
    """A stand-in for rich's Progress that shows nothing."""

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def advance(self, *args: Any, **kwargs: Any) -> None:
        pass

    def update(self, *args: Any, **kwargs: Any) -> None:
        pass


def _columns() -> tuple:
    return (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


@contextlib.contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Progress | _Silent]:
    """A rich Progress (``add_task``, ``advance``, ``update``), or a silent stand-in when not ``enabled``
    or when ``AVATAR3D_QUIET`` is set."""
    if not enabled or os.environ.get("AVATAR3D_QUIET"):
        yield _Silent()
        return
    with Progress(*_columns(), transient=False) as p:
        yield p


def track(iterable: Iterable[T], description: str = "working") -> Iterator[T]:
    """Iterate with a progress bar (elapsed and remaining time)."""
    if os.environ.get("AVATAR3D_QUIET"):
        yield from iterable
        return
    items = list(iterable) if not hasattr(iterable, "__len__") else iterable
    with progress_bar() as p:
        task = p.add_task(description, total=len(items))  # type: ignore[arg-type]
        for x in items:
            yield x
            p.advance(task)


__all__ = ["progress_bar", "track"]
