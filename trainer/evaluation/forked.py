"""Map a function over jobs in forked worker processes that share one large read-only object.

Why fork, and why a module-level object: the evaluation's inputs (every clip's audio, a stream's
frames, DTW feature sequences) are hundreds of megabytes. Forked workers inherit them from the
parent's memory instead of having them pickled into every task; a job then names only what
differs (an index, a template, a chunk of pairs). Interpreters and ONNX sessions do not survive a
fork, so ``initializer`` builds them in each worker.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_SHARED: Any = None


def shared() -> Any:
    """The object the running :func:`fork_imap` shares with its workers (in a worker or in-process)."""
    return _SHARED


def fork_imap(
    function: Callable[[Any], Any],
    jobs: Iterable[Any],
    shared_object: Any,
    workers: int = 0,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    chunksize: int = 1,
) -> Iterator[Any]:
    """``function(job)`` for every job, in order, on ``workers`` forked processes (0: every core; 1: here)."""
    global _SHARED
    workers = workers or os.cpu_count() or 1
    _SHARED = shared_object
    try:
        if workers <= 1:
            if initializer is not None:
                initializer(*initargs)
            yield from map(function, jobs)
        else:
            with multiprocessing.get_context("fork").Pool(workers, initializer, initargs) as pool:
                yield from pool.imap(function, jobs, chunksize)
    finally:
        _SHARED = None
