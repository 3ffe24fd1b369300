"""The Luigi settings the pipeline's safety relies on come with the package, whatever luigi.cfg the current
folder has or lacks: shipped defaults read below every config file, and the few `wisc-sort` pins for its runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import luigi.configuration
from luigi.configuration.cfg_parser import LuigiConfigParser

DEFAULTS_FILE = Path(__file__).with_name("luigi_defaults.cfg")

# What `wisc-sort` runs with whatever a luigi.cfg says: keep-alive (a sort waiting for GPU units waits),
# completion checked on run, one try per failed step (else a keep-alive worker sleeps forever on it).
PINNED: dict[tuple[str, str], str] = {
    ("worker", "keep_alive"): "true",
    ("worker", "check_complete_on_run"): "true",
    ("scheduler", "retry_count"): "1",
}


def install_defaults() -> None:
    """Read the shipped luigi_defaults.cfg first, so that a folder's luigi.cfg (or LUIGI_CONFIG_PATH) can
    still change what it sets, and a folder without one gets them all. Idempotent."""
    paths = LuigiConfigParser._config_paths
    if str(DEFAULTS_FILE) in paths:
        return
    paths.insert(0, str(DEFAULTS_FILE))
    if LuigiConfigParser._instance is not None:
        LuigiConfigParser.reload()  # every file again, in order: the defaults first, the rest over them


def pin() -> dict[tuple[str, str], str | None]:
    """Set PINNED over whatever the config files say; returns the values they replaced (None: unset)."""
    install_defaults()
    config = luigi.configuration.get_config()
    before: dict[tuple[str, str], str | None] = {}
    for (section, name), value in PINNED.items():
        if not config.has_section(section):
            config.add_section(section)
        before[(section, name)] = config.get(section, name) if config.has_option(section, name) else None
        config.set(section, name, value)
    return before


@contextmanager
def pinned() -> Iterator[None]:
    """PINNED in force for the block (a `luigi.build` run), the config as it was afterwards."""
    before = pin()
    try:
        yield
    finally:
        config = luigi.configuration.get_config()
        for (section, name), value in before.items():
            if value is None:
                config.remove_option(section, name)
            else:
                config.set(section, name, value)
