"""Scans larger than memory: the decisions a map is made of, and the scan rows each chunk reads.

A map is made of *decisions*: the model reads one window of probe positions (a single position, the window
around it, or a whole cell folded into its parts) and its outputs go to every position that window stands
for. Along each scan axis the decisions' windows start where :func:`decision_grid` says: every position's own
window (:func:`polar4d_lib.pacbed.window_starts`), or, for a model that folds a cell (its resolution is the
cell), every ``stride``-th of them, a part of a cell apart.

The decisions are taken a chunk of whole decision rows at a time (:func:`chunks`): a chunk reads only the
scan rows its windows cover (:meth:`polar4d_lib.io.Scan.rows`), so the memory a map needs is set by
``memory_limit_gb``, not by the scan. The model is called on row groups of the same decisions whatever the
chunking (:func:`group_rows`), so a chunked map equals the whole-scan map exactly (a network's output on
the CPU depends a little on how its inputs are batched). A preprocessor that centres every pattern on the
mean centre of its inputs (``center: dataset``) takes that mean over each row group, not the whole scan.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from polar4d_lib import pacbed

#: The memory ``polar4d predict`` keeps to unless told otherwise (``--memory-limit``), GB.
DEFAULT_MEMORY_LIMIT_GB = 2.0
#: Working memory for scan rows where no limit is given (a library call, e.g. in a notebook that holds
#: other data), bytes.
DEFAULT_WORKING_BYTES = 10**9
#: About how many decisions one model call takes (whole decision rows).
GROUP_DECISIONS = 512
#: Working memory per byte of scan rows read (the float32 rows, their rotation into the scan frame, the
#: float64 window sums and the model's inputs), measured with the shipped model and single-pattern models.
WORKING_COPIES = 5


def decision_grid(size: int, window: int, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Along a scan axis of ``size`` positions: the starts (D,) of the decisions' windows of ``window``
    positions, and each position's decision (size,). ``stride`` 1: every position's own window
    (:func:`pacbed.window_starts`, shared where the edge moves it inwards); ``stride`` s > 1: each position's
    window start rounded to a multiple of s (kept inside the scan), so that decisions are s positions apart
    and a window sits at most s/2 positions off its position."""
    own = pacbed.window_starts(size, window)
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"the decision stride is a whole number of positions ≥ 1, got {stride!r}")
    if stride > 1:
        own = np.clip(stride * np.floor(own / stride + 0.5).astype(np.int64), 0, max(0, size - window))
    starts, index = np.unique(own, return_inverse=True)
    return starts.astype(np.int64), index.ravel().astype(np.int64)


def group_rows(decisions_per_row: int) -> int:
    """Decision rows per model call: about :data:`GROUP_DECISIONS` decisions, at least one row."""
    return max(1, math.ceil(GROUP_DECISIONS / max(1, decisions_per_row)))


def rows_spanned(starts: np.ndarray, window: int, size: int, first: int, stop: int) -> tuple[int, int]:
    """The scan rows [lo, hi) the windows of decision rows ``first`` … ``stop`` − 1 cover."""
    return int(starts[first]), int(min(size, starts[stop - 1] + window))


def available_bytes(memory_limit_gb: float | None) -> int:
    """What ``memory_limit_gb`` leaves for scan rows beyond what this process holds already (Python, torch,
    the model): a one-line error where that is nothing. None: :data:`DEFAULT_WORKING_BYTES`, whatever the
    process holds."""
    if memory_limit_gb is None:
        return DEFAULT_WORKING_BYTES
    if not (isinstance(memory_limit_gb, (int, float)) and math.isfinite(memory_limit_gb) and memory_limit_gb > 0):
        raise ValueError(f"--memory-limit is a size in GB > 0, got {memory_limit_gb!r}")
    held = resident_bytes()
    free = int(memory_limit_gb * 1e9) - held
    if free <= 0:
        raise ValueError(f"--memory-limit {memory_limit_gb:g} GB is below what polar4d already holds "
                         f"({held / 1e9:.2f} GB: Python, torch and the model); raise it")
    return free


def resident_bytes() -> int:
    """This process's resident memory now (bytes)."""
    import psutil

    return int(psutil.Process(os.getpid()).memory_info().rss)


def chunks(starts: np.ndarray, window: int, size: int, row_bytes: int, per_group: int, budget_bytes: int,
           memory_limit_gb: float | None) -> list[tuple[int, int]]:
    """Chunks [first, stop) of decision rows, each whole row groups of ``per_group`` rows, as many as fit
    ``budget_bytes`` of working memory (:data:`WORKING_COPIES` × the scan rows they read, ``row_bytes``
    each); a one-line error where one row group does not fit ``memory_limit_gb``. Without a limit the budget is
    a target: a row group larger than it is a chunk of its own (a notebook's in-memory scan of large patterns)."""
    groups = [(g, min(g + per_group, len(starts))) for g in range(0, len(starts), per_group)]

    def need(first: int, stop: int) -> int:
        lo, hi = rows_spanned(starts, window, size, first, stop)
        return (hi - lo) * row_bytes * WORKING_COPIES

    out: list[tuple[int, int]] = []
    for first, stop in groups:
        if need(first, stop) > budget_bytes and memory_limit_gb is not None:
            raise ValueError(f"--memory-limit {memory_limit_gb:g} GB leaves {budget_bytes / 1e9:.2f} GB for the scan, but one "
                             f"row of decisions needs {need(first, stop) / 1e9:.2f} GB; raise --memory-limit to at least "
                             f"{memory_limit_gb + (need(first, stop) - budget_bytes) / 1e9 + 0.05:.1f} GB")
        if out and need(out[-1][0], stop) <= budget_bytes:
            out[-1] = (out[-1][0], stop)
        else:
            out.append((first, stop))
    return out


def _rows_of_file(path: str, lo: int, hi: int) -> np.ndarray:
    from polar4d_lib.io import read_scan

    return read_scan(path).rows(lo, hi)


def file_rows(scan: Any) -> Callable[[int, int], np.ndarray]:
    """``rows(lo, hi)`` of ``scan`` read from its file (``scan.source``) wherever it is called: what a dask
    worker reads its chunk with. A one-line error where the scan has no file."""
    if not scan.source or not Path(scan.source).is_file():
        raise ValueError(f"mapping on a cluster reads the scan from its file, and {scan.source or 'this scan'} is "
                         "not one the workers can open: save it (a .npy) on a file system they share")
    return functools.partial(_rows_of_file, str(Path(scan.source).resolve()))


def on_cluster(address: str, task: Callable[..., Any], model: Any, rows_of: Callable[[int, int], np.ndarray],
               decisions: Any, plan: Sequence[tuple[int, int]]) -> Iterator[Any]:
    """``task(model, rows_of, decisions, first, stop)`` for every chunk of ``plan`` on the dask.distributed
    scheduler at ``address`` (the model sent to every worker once), the results in the plan's order."""
    from dask.distributed import Client

    try:
        client = Client(address, timeout="30s")
    except (OSError, TimeoutError) as error:
        raise ValueError(f"no dask scheduler answers at {address} ({type(error).__name__}); start one "
                         "(dask scheduler; dask worker ADDRESS) or leave out --scheduler") from None
    try:
        shared = client.scatter(model, broadcast=True)
        futures = [client.submit(task, shared, rows_of, decisions, first, stop, pure=False) for first, stop in plan]
        for future in futures:
            yield future.result()
    finally:
        client.close()
