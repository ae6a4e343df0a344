"""Progress bars (rich) for long loops; silent when stderr is not a terminal and AVATAR3D_QUIET is set."""

from __future__ import annotations

import os
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def track(iterable: Iterable[T], description: str = "working") -> Iterator[T]:
    """Iterate with a rich progress bar (elapsed and remaining time)."""
    if os.environ.get("AVATAR3D_QUIET"):
        yield from iterable
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    items = list(iterable) if not hasattr(iterable, "__len__") else iterable
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
    ) as p:
        task = p.add_task(description, total=len(items))  # type: ignore[arg-type]
        for x in items:
            yield x
            p.advance(task)
