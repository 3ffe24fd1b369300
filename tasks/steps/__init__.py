"""The step registry and the Luigi tasks derived from it: preprocessing, sort, postprocessing, finalize."""
