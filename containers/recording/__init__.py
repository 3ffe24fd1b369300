"""SpikeInterface recordings of a sorting: SpikeGLX files, the kept segments, the preprocessing chain."""
