"""A sorted demo world ready for postprocessing: a hypnogram project, the demo's postpro options, the CLI."""

from __future__ import annotations

import pandas as pd
import yaml

from tests.support.cli import main_keeping_env
from tests.support.pipeline_world import EXPERIMENT, REPO, SUBJECT, copy_sorting

DEMO_POSTPRO = REPO / "opts" / "postpro_demo.yaml"


def hypnogram_rows(sorting) -> pd.DataFrame:
    """NREM for the first 6 s of experiment time, Wake 6-11 s, REM 11-40 s (past the end: clipped)."""
    return pd.DataFrame(
        {"state": ["N2", "aWk", "REM"], "start_time": [0.0, 6.0, 11.0], "end_time": [6.0, 11.0, 40.0]}
    ).assign(duration=lambda t: t.end_time - t.start_time)


def setup_world(demo_world, sorted_run, tmp_path, opts: dict | None = None):
    sorting = demo_world.sorting(tmp_path)
    copy_sorting(sorted_run, sorting)
    hyp_dir = tmp_path / "hyp" / EXPERIMENT / SUBJECT
    hyp_dir.mkdir(parents=True)
    hypnogram_rows(sorting).to_csv(hyp_dir / "hypnogram.htsv", sep="\t", index=False)
    opts_path = tmp_path / "postpro_demo.yaml"
    opts_path.write_text(yaml.safe_dump(opts or yaml.safe_load(DEMO_POSTPRO.read_text()), sort_keys=False))
    return sorting, opts_path


def postpro(demo_world, tmp_path, opts_path, *extra: str) -> int:
    """`wisc-sort postpro --opts FILE`, or `--postpro NAME` when given a set's own postpro_opts.yaml."""
    which = (
        ["--postpro", opts_path.parent.name]
        if opts_path.name == "postpro_opts.yaml"
        else ["--opts", str(opts_path)]
    )
    argv = demo_world.argv(tmp_path, *which, "--hypnogram-project", "hyp", *extra)
    argv[0] = "postpro"
    projects = tmp_path / "projects.yaml"  # argv() rewrote it: add the hypnogram project again
    projects.write_text(
        projects.read_text() + f"---\nproject: hyp\nproject_directory: {tmp_path / 'hyp'}\n...\n"
    )
    return main_keeping_env(argv)
