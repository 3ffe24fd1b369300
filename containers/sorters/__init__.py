"""Sorter adapters: how each sorter is run on recording.dat and its output brought to phy's format."""
