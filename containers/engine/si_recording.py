"""EngineRecording: engine output as a SpikeInterface recording, for SpikeInterface's consumers.

`get_traces` runs the engine on the parent's raw frames, with margins across the whole kept recording
(one segment). It holds torch state and a reader closure, so it is neither json- nor pickle-serializable:
callers run SpikeInterface consumers with n_jobs=1 (SpikeInterface then reads in the main process) and
get parallelism from the engine's torch threads (plan_chain's n_jobs).
"""

from __future__ import annotations

import numpy as np
from spikeinterface.core import BaseRecording, BaseRecordingSegment

from containers.engine.chain import EngineChain


class EngineRecording(BaseRecording):
    """The chain's output; channel ids, probe and properties copied from `template` (SI's same chain)."""

    def __init__(self, chain: EngineChain, template: BaseRecording) -> None:
        if not np.array_equal(template.channel_ids, chain.channel_ids):
            raise ValueError(
                "EngineRecording: the template's channels differ from the chain's output channels"
            )
        super().__init__(chain.sampling_frequency, list(chain.channel_ids), np.dtype(chain.dtype))
        template.copy_metadata(self)
        self.add_recording_segment(EngineRecordingSegment(chain))
        self.chain = chain
        self._serializability["json"] = False
        self._serializability["pickle"] = False
        self._kwargs = {}


class EngineRecordingSegment(BaseRecordingSegment):
    def __init__(self, chain: EngineChain) -> None:
        super().__init__(sampling_frequency=chain.sampling_frequency)
        self.chain = chain

    def get_num_samples(self) -> int:
        return self.chain.num_frames

    def get_traces(self, start_frame=None, end_frame=None, channel_indices=None) -> np.ndarray:
        start = 0 if start_frame is None else int(start_frame)
        end = self.chain.num_frames if end_frame is None else int(end_frame)
        if end <= start:
            return np.zeros((0, self.chain.num_channels), dtype=self.chain.dtype)[:, channel_indices]
        traces = self.chain.compute(start, end)
        return traces if channel_indices is None else traces[:, channel_indices]
