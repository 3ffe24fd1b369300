"""recording.dat in one pass: a reader thread ahead, the engine in the caller's thread, a writer behind.

Queues are bounded (QUEUE_DEPTH chunks each way), so memory depends on the chunk size, not on the
recording's length. The output is int16 C-order (frames, channels), as SpikeInterface's
write_binary_recording writes it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from containers.engine.chain import EngineChain

QUEUE_DEPTH = 2
_DONE = object()


def write_recording_dat(
    chain: EngineChain,
    path: str | Path,
    *,
    chunk_frames: int = 30000,
    n_jobs: int | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> None:
    """Write the chain's whole output to `path` (int16, clipped and rounded; the chain must be int16).

    n_jobs: compute threads on CPU (default: the chain's own); on_progress(fraction written).
    """
    if chain.dtype != "int16":
        raise ValueError("write_recording_dat: plan the chain with dtype='int16'")
    if n_jobs is not None:
        chain.n_jobs = max(1, n_jobs)
    starts = range(0, chain.num_frames, chunk_frames)
    blocks: queue.Queue = queue.Queue(QUEUE_DEPTH)
    outputs: queue.Queue = queue.Queue(QUEUE_DEPTH)
    stop = threading.Event()
    errors: list[BaseException] = []

    def read_all() -> None:
        for start in starts:
            if stop.is_set():
                return
            _put(blocks, chain.read(start, min(start + chunk_frames, chain.num_frames)), stop)
        _put(blocks, _DONE, stop)

    def write_all(file) -> None:
        written = 0
        for array in _drain(outputs, stop):
            file.write(memoryview(np.ascontiguousarray(array)).cast("B"))
            written += array.shape[0]
            if on_progress is not None:
                on_progress(written / chain.num_frames)

    with open(path, "wb") as file:
        threads = [
            threading.Thread(target=_guard, args=(read_all, errors, stop), daemon=True),
            threading.Thread(target=_guard, args=(lambda: write_all(file), errors, stop), daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            for block in _drain(blocks, stop):
                _put(outputs, chain.process(block), stop)
            _put(outputs, _DONE, stop)
        except BaseException:
            stop.set()
            raise
        finally:
            for thread in threads:
                thread.join()
    if errors:
        raise errors[0]


def _guard(work: Callable[[], None], errors: list[BaseException], stop: threading.Event) -> None:
    try:
        work()
    except BaseException as err:  # handed to the caller's thread, which re-raises it
        errors.append(err)
        stop.set()


def _put(q: queue.Queue, item: object, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _drain(q: queue.Queue, stop: threading.Event) -> Iterator:
    while not stop.is_set():
        try:
            item = q.get(timeout=0.1)
        except queue.Empty:
            continue
        if item is _DONE:
            return
        yield item
