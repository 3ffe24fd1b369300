"""The demo world: generated SpikeGLX data with known truth, and how a sort compares to it."""
