"""Tests for projects.yaml parsing and project lookup."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tasks.core.errors import UserError
from tasks.inputs.projects import load_projects, project_dir

STREAM = """\
project: shared
project_directory: /Volumes/npx_nfs/shared_s3
...
project: shared_nobak
project_directory: /Volumes/npx_nfs/nobak/shared
...
---
project: shared_ssd
project_directory: local/ssd
...
"""
DOC_A = "project: a\nproject_directory: /x\n...\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "projects.yaml"
    path.write_text(text)
    return path


def test_reads_a_stream_of_documents(tmp_path):
    path = write(tmp_path, STREAM)
    projects = load_projects(path)
    assert projects.path == path
    assert dict(projects) == {
        "shared": Path("/Volumes/npx_nfs/shared_s3"),
        "shared_nobak": Path("/Volumes/npx_nfs/nobak/shared"),
        "shared_ssd": tmp_path / "local/ssd",  # relative to the projects file's folder
    }
    assert project_dir(projects, "shared_nobak") == Path("/Volumes/npx_nfs/nobak/shared")


def test_dash_separated_stream_without_dots(tmp_path):
    text = "---\nproject: a\nproject_directory: /x\n---\nproject: b  # fast drive\nproject_directory: /y\n"
    assert dict(load_projects(write(tmp_path, text))) == {"a": Path("/x"), "b": Path("/y")}


def test_unknown_project_lists_known_ones_and_the_file(tmp_path):
    path = write(tmp_path, STREAM)
    known = rf"\(known in {path}: shared, shared_nobak, shared_ssd\)"
    with pytest.raises(UserError, match=rf"unknown project `shared_ssdd` {known}.*Did you mean shared_ssd"):
        project_dir(load_projects(path), "shared_ssdd")


def test_missing_file_says_how_to_create_it(tmp_path):
    path = tmp_path / "nope" / "projects.yaml"
    with pytest.raises(UserError, match=rf"projects file {path} not found.*printf") as err:
        load_projects(path)
    # The suggested command makes a file that loads.
    command = str(err.value).split("e.g. ")[1].split(" (or")[0]
    path.parent.mkdir()
    subprocess.run(["bash", "-c", command], check=True)
    assert dict(load_projects(path)) == {"shared": Path("/path/to/shared")}


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("project: a\nproject_directory: [x\n...\n", r"malformed YAML at line 3"),
        ("project: a\n  project_directory: /x\n...\n", r"malformed YAML at line 2"),
        (f"{DOC_A}project: b\n  project_directory: /x\n...\n", r"malformed YAML at line 5"),
        (
            "project: a\nproject_directory: /x\n...\nproject: b\n...\n",
            r"line 4 lacks key `project_directory`",
        ),
        ("project_directory: /x\n...\n", r"document at line 1 lacks key `project`"),
        (f"{DOC_A}{DOC_A}", r"`a` is defined twice \(lines 1 and 4\)"),
        ("project: a\nproject_dir: /x\nproject_directory: /x\n...\n", r"unknown key\(s\) project_dir"),
        ("- a\n- b\n", r"document at line 1 is not a mapping"),
    ],
)
def test_bad_files_name_the_file_and_line(tmp_path, text, pattern):
    path = write(tmp_path, text)
    with pytest.raises(UserError, match=pattern) as err:
        load_projects(path)
    assert str(err.value).startswith(str(path))


def test_empty_file_has_no_projects(tmp_path):
    projects = load_projects(write(tmp_path, ""))
    assert len(projects) == 0
    with pytest.raises(UserError, match="known in .*: none"):
        project_dir(projects, "shared")
