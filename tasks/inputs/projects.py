"""projects.yaml: a YAML stream of `project` + `project_directory` documents, one per project name."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import yaml

from tasks.core.errors import UserError
from tasks.options.sorting import _StrictLoader

EXAMPLE = "project: shared\\nproject_directory: /path/to/shared\\n..."


class Projects(Mapping[str, Path]):
    """Project name -> project directory, remembering the file it came from (for error messages)."""

    def __init__(self, path: Path, directories: dict[str, Path]) -> None:
        self.path = Path(path)
        self._directories = dict(directories)

    def __getitem__(self, name: str) -> Path:
        return self._directories[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._directories)

    def __len__(self) -> int:
        return len(self._directories)

    def __repr__(self) -> str:
        return f"Projects({str(self.path)!r}, {self._directories!r})"


def _chunks(text: str) -> Iterator[tuple[int, str]]:
    """Split at `...` lines: PyYAML wants `---` after a `...`; the lab's files go without."""
    start, lines = 0, text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if re.fullmatch(r"\.\.\.\s*(#.*)?", line.rstrip("\r\n")):
            yield start, "".join(lines[start : i + 1])
            start = i + 1
    yield start, "".join(lines[start:])


def _documents(path: Path, text: str) -> Iterator[tuple[int, object]]:
    """Yield (first line, data) for each document of the stream, with YAML errors as one-line UserErrors."""
    for offset, chunk in _chunks(text):
        loader = _StrictLoader(chunk)  # a repeated key must not win silently
        try:
            while loader.check_node():
                node = loader.get_node()
                yield offset + node.start_mark.line + 1, loader.construct_document(node)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {offset + mark.line + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or str(e)
            raise UserError(f"{path}: malformed YAML{where}: {problem}; fix the file.") from None
        finally:
            loader.dispose()


def read_user_text(path: Path) -> str:
    """A user-edited text file (projects, subject, exclusions) as UTF-8; a one-line UserError if it is not."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")  # Excel and Notepad may start the file with a BOM
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise UserError(
            f"{path}: line {line} has byte 0x{raw[err.start]:02x}, which is not UTF-8 text; "
            "save the file as UTF-8 (or remove the accented character)."
        ) from None


def load_projects(path: Path) -> Projects:
    """Read the projects file. Relative `project_directory` values are relative to the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"projects file {path} not found: create it with one document per project, e.g. "
            f"printf '{EXAMPLE}\\n' > {path} (or point [wisc] projects_file in luigi.cfg at yours)."
        )
    directories: dict[str, Path] = {}
    first_line: dict[str, int] = {}
    for line, doc in _documents(path, read_user_text(path)):
        if doc is None:  # an empty document (e.g. a stray `---`) carries nothing
            continue
        if not isinstance(doc, dict):
            raise UserError(
                f"{path}: the document at line {line} is not a mapping; "
                "write `project: <name>` and `project_directory: <path>`."
            )
        for key in ("project", "project_directory"):
            if doc.get(key) in (None, ""):
                raise UserError(f"{path}: the document at line {line} lacks key `{key}`; add it.")
        unknown = sorted(set(doc) - {"project", "project_directory"})
        if unknown:
            raise UserError(
                f"{path}: the document at line {line} has unknown key(s) {', '.join(map(str, unknown))}; "
                "only `project` and `project_directory` are allowed."
            )
        name = str(doc["project"])
        if name in directories:
            raise UserError(
                f"{path}: project `{name}` is defined twice (lines {first_line[name]} and {line}); "
                "keep one document per project."
            )
        directory = Path(str(doc["project_directory"])).expanduser()
        directories[name] = directory if directory.is_absolute() else path.parent / directory
        first_line[name] = line
    return Projects(path, directories)


def project_dir(projects: Projects, name: str) -> Path:
    """The directory of project `name`; UserError naming the known projects if there is none."""
    if name in projects:
        return projects[name]
    close = difflib.get_close_matches(name, list(projects), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    known = ", ".join(sorted(projects)) or "none"
    where = getattr(projects, "path", "the projects file")
    raise UserError(f"unknown project `{name}` (known in {where}: {known}); add a document for it.{hint}")
