"""The `wisc-sort` command line: one module per command."""
