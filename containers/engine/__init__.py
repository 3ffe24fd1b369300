"""The fast preprocessing chain: SpikeInterface's steps on int16 chunks in torch (CPU threads or CUDA).

`plan_chain` (planning, uses SpikeInterface) turns the options' preprocessing list into an EngineChain;
`EngineRecording` exposes it to SpikeInterface's consumers; `write_recording_dat` writes recording.dat.
The kernels, stages and chain import only torch, numpy and scipy (a GPU machine needs nothing else).
Every name loads on first use: the monopolar solver's worker processes import this package without torch.
"""

from __future__ import annotations

from importlib import import_module

_LAZY = {
    "EngineChain": "containers.engine.chain",
    "EngineUnsupported": "containers.engine.chain",
    "plan_chain": "containers.engine.planning",
    "plan_recording": "containers.engine.planning",
    "EngineRecording": "containers.engine.si_recording",
    "write_recording_dat": "containers.engine.writer",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'containers.engine' has no attribute {name!r}")
