"""EngineChain: a planned list of stages run on chunks of the raw int16 recording, with margins.

SpikeInterface-free: the raw frames come from a `reader(start, end) -> (frames, channels) int16`
callable, so a GPU machine without SpikeInterface can run a chain planned from plain arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from containers.engine.kernels import to_int16
from containers.engine.stages import Stage, Window

Reader = Callable[[int, int], np.ndarray]


class EngineUnsupported(Exception):
    """A step or parameter the engine does not implement: the caller runs the chain in SpikeInterface.

    The message reads "<step>.<param>: why".
    """


@dataclass
class Block:
    """Raw frames of one chunk with its margins: what the reader thread hands to the compute."""

    raw: np.ndarray  # (frames + margins, channels) int16
    start: int  # the chunk's first frame
    end: int
    buffer_start: int  # the first frame of `raw`
    cut_left: bool
    cut_right: bool


@dataclass
class EngineChain:
    """The planned chain. `compute(start, end)` returns (frames, channels) in `dtype`, like get_traces."""

    stages: list[Stage]
    reader: Reader
    num_frames: int
    sampling_frequency: float
    channel_ids: np.ndarray  # output channels (after bad channels and border removal)
    channel_locations: np.ndarray
    dtype: str = "float32"  # "float32" or "int16" (clipped, rounded half to even)
    device: str = "cpu"
    n_jobs: int = 1

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "int16"):
            raise ValueError(f"EngineChain dtype must be float32 or int16, not {self.dtype}")
        temporal = [i for i, stage in enumerate(self.stages) if stage.temporal]
        self._last_temporal = temporal[-1] if temporal else -1
        self.torch_device = torch.device(self.device)
        self._pool: tuple[int, ThreadPoolExecutor] | None = None
        if self.torch_device.type == "cpu":
            # n_jobs threads over time pieces of a chunk, each torch op on one thread: intra-op threads
            # cost more than they gain on the median network's many small ops (measured: 0.1x vs 2x
            # real time per core at 2 threads on a loaded machine).
            torch.set_num_threads(1)

    @property
    def margin(self) -> int:
        """Frames read on each side of a chunk (the sum of the temporal steps' margins)."""
        return sum(stage.margin for stage in self.stages)

    @property
    def num_channels(self) -> int:
        return len(self.channel_ids)

    def read(self, start: int, end: int) -> Block:
        if not 0 <= start < end <= self.num_frames:
            raise ValueError(f"frames [{start}, {end}) outside the recording's {self.num_frames}")
        margin = self.margin
        first, last = max(0, start - margin), min(self.num_frames, end + margin)
        raw = self.reader(first, last)
        return Block(raw, start, end, first, start - margin < 0, end + margin > self.num_frames)

    def process(self, block: Block) -> np.ndarray:
        """The chain on one block: (end - start, channels) numpy array in `dtype`."""
        pieces = self._pieces(block)
        if len(pieces) == 1:
            return self._process_piece(pieces[0])
        if self._pool is None or self._pool[0] != self.n_jobs:
            self._pool = (self.n_jobs, ThreadPoolExecutor(self.n_jobs, thread_name_prefix="engine"))
        return np.concatenate(list(self._pool[1].map(self._process_piece, pieces)))

    def _pieces(self, block: Block) -> list[Block]:
        """The block in time pieces, each with its margins (views into the block's raw frames).

        When a recording end cuts the margin, the `margin` frames next to that end are a piece of their own:
        only they take SpikeInterface's edge path (scipy's filtfilt, on a short buffer), the rest has full
        margins and takes the FFT. On CPU the rest is cut into n_jobs pieces, one per thread.
        """
        m, frames = self.margin, self.num_frames
        lo = m if block.cut_left and block.start < m < block.end else block.start
        hi = frames - m if block.cut_right and lo < frames - m < block.end else block.end
        parts = self.n_jobs if self.torch_device.type == "cpu" and hi - lo >= 4 * m * self.n_jobs else 1
        inner = np.linspace(lo, hi, parts + 1).round().astype(int).tolist()
        bounds = sorted({block.start, *inner, block.end})
        pieces = []
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            first, last = max(0, start - m), min(frames, end + m)
            raw = block.raw[first - block.buffer_start : last - block.buffer_start]
            pieces.append(Block(raw, start, end, first, start - m < 0, end + m > frames))
        return pieces

    def _process_piece(self, block: Block) -> np.ndarray:
        with torch.inference_mode():  # thread-local: entered in each worker thread
            return self._run_stages(block)

    def _run_stages(self, block: Block) -> np.ndarray:
        x = self._channels_first(block.raw)
        window = Window(block.buffer_start, block.cut_left, block.cut_right)
        if self._last_temporal < 0:
            x, window = self._trim(x, block)
        for i, stage in enumerate(self.stages):
            x = stage.apply(x, window)
            if i == self._last_temporal:
                # Everything after is pointwise in time: drop the margins now.
                x, window = self._trim(x, block)
        out = to_int16(x) if self.dtype == "int16" else x
        # Transposed in numpy: its strided copy is ~2x torch's on CPU (and int16 moves half the bytes).
        return np.ascontiguousarray(out.cpu().numpy().T)

    def compute(self, start: int, end: int) -> np.ndarray:
        return self.process(self.read(start, end))

    def _channels_first(self, raw: np.ndarray) -> torch.Tensor:
        """(frames, channels) int16 -> (channels, frames) float32 on the device."""
        if self.torch_device.type == "cpu":
            return torch.from_numpy(raw.T.astype(np.float32))  # numpy's strided cast: ~8x torch's copy_
        moved = torch.from_numpy(np.ascontiguousarray(raw)).to(self.torch_device, non_blocking=True)
        return moved.T.to(torch.float32).contiguous()

    @staticmethod
    def _trim(x: torch.Tensor, block: Block) -> tuple[torch.Tensor, Window]:
        lead = block.start - block.buffer_start
        return x[:, lead : lead + block.end - block.start], Window(block.start)
