"""The options in force: the sorting's (or a postprocessing set's) own copy rules once it exists; a differing
file given on the command line is refused unless `--replace-opts`. One rule for sort and postpro."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import UserError
from tasks.options.sorting import diff_options


@dataclass(frozen=True)
class Adoption:
    options: dict  # in force after this run
    write: bool  # the copy must be written (first run, or replaced)
    replaces: bool  # an existing copy is replaced: back it up first


def adopt_options(
    copy: Path,
    read_copy: Callable[[], dict],
    given: dict | None,
    given_path: Path | None,
    replace: bool,
    copy_name: str,
    first_run_hint: str,
) -> Adoption:
    """Decide, writing nothing: keep the copy, adopt `given` (first run or --replace-opts), or refuse."""
    if not copy.exists():
        if given is None:
            raise UserError(first_run_hint)
        return Adoption(given, write=True, replaces=False)
    current = read_copy()  # validated like any options file: an edit with a typo is an error
    differing = diff_options(current, given) if given is not None else []
    if differing and not replace:
        more = " ..." if len(differing) > 10 else ""
        raise UserError(
            f"{given_path} differs from {copy} at {', '.join(differing[:10])}{more}: edit {copy_name} "
            "(it drives reruns) or pass --replace-opts"
        )
    if differing:
        return Adoption(given, write=True, replaces=True)
    return Adoption(current, write=False, replaces=False)
