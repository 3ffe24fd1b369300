"""The fast preprocessing chain: SpikeInterface's steps on int16 chunks in torch (CPU threads or CUDA).

`plan_chain` (planning, uses SpikeInterface) turns the options' preprocessing list into an EngineChain;
`EngineRecording` exposes it to SpikeInterface's consumers; `write_recording_dat` writes recording.dat.
The kernels, stages and chain import only torch, numpy and scipy (a GPU machine needs nothing else):
the SpikeInterface-bound names load on first use.
"""

from __future__ import annotations

from importlib import import_module

from containers.engine.chain import EngineChain, EngineUnsupported

_LAZY = {
    "plan_chain": "containers.engine.planning",
    "plan_recording": "containers.engine.planning",
    "EngineRecording": "containers.engine.si_recording",
    "write_recording_dat": "containers.engine.writer",
}

__all__ = ["EngineChain", "EngineUnsupported", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'containers.engine' has no attribute {name!r}")
