"""Postprocessing: the SortingAnalyzer, extensions, quality metrics (per sleep state), summary plots."""
