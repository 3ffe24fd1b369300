"""The fast chain: preprocessing, detection and localization on int16 chunks in torch (CPU threads or
CUDA)."""
