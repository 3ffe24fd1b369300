"""Planning layer of wisc-sorting (imports nothing: `import tasks` loads no luigi, pandas or numpy)."""
