"""The shipped default options files: `opts/` of the source tree, installed as package data
`tasks.default_opts`."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from tasks.core.errors import UserError

SOURCE_TREE_OPTS = Path(__file__).resolve().parents[2] / "opts"


def default_options(name: str) -> Path:
    """The path of a shipped options file, e.g. `sorting_demo.yaml`: the installed package data, else the
    source tree's opts/ (an editable install maps no subpackage outside the tree's packages)."""
    try:
        path = Path(str(files("tasks.default_opts").joinpath(name)))  # a folder in site-packages: a real file
    except ModuleNotFoundError:
        path = SOURCE_TREE_OPTS / name
    if not path.is_file():
        raise UserError(f"{name}: not a shipped options file; see the opts/ folder of wisc-sorting")
    return path
