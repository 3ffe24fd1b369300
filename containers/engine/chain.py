"""EngineChain: a planned list of stages run on chunks of the raw int16 recording, with margins.

SpikeInterface-free: the raw frames come from a `reader(start, end) -> (frames, channels) int16`
callable, so a GPU machine without SpikeInterface can run a chain planned from plain arrays.
"""

from __future__ import annotations

from collections.abc import Callable
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
        if self.torch_device.type == "cpu":
            torch.set_num_threads(max(1, self.n_jobs))

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
        with torch.inference_mode():
            outputs = [self._process_piece(piece) for piece in self._pieces(block)]
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def _pieces(self, block: Block) -> list[Block]:
        """The block, or, when a recording end cuts its margin, the `margin` frames next to that end apart.

        Only those frames then take SpikeInterface's edge path (scipy's filtfilt, on a short buffer); the
        rest has full margins and takes the FFT. The raw frames are views into the block's.
        """
        m, frames = self.margin, self.num_frames
        bounds = [block.start]
        if block.cut_left and block.start < m < block.end:
            bounds.append(m)
        if block.cut_right and bounds[-1] < frames - m < block.end:
            bounds.append(frames - m)
        bounds.append(block.end)
        pieces = []
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            first, last = max(0, start - m), min(frames, end + m)
            raw = block.raw[first - block.buffer_start : last - block.buffer_start]
            pieces.append(Block(raw, start, end, first, start - m < 0, end + m > frames))
        return pieces

    def _process_piece(self, block: Block) -> np.ndarray:
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
