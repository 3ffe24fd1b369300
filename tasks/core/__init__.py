"""The sorting-directory contract, luigi-free: file names, atomic writes and backups, manifests and step
states, signatures, errors."""
