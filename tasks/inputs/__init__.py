"""The lab's inputs: projects, subjects, SpikeGLX files and their cache, exclusions, the segment table,
hypnograms."""
