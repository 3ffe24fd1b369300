"""`wisc-sort demo`: generate (or reuse) the demo world, run the whole pipeline on it, report against the
truth.

The world's data and the report are compute (numpy, SpikeInterface): they run as programs of the compute
layer (`python -m containers.demo write|report`), like every step; this module only plans and drives.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from tasks.core import atomic
from tasks.core.errors import UserError
from tasks.inputs import demo
from tasks.inputs.resolve import Target, resolve, sorting_dir
from tasks.options.files import default_options
from tasks.settings import Paths, export_paths, load_paths

DEMO_TARGET = Target(demo.PROJECT, demo.EXPERIMENT, demo.ALIAS, demo.SUBJECT, demo.PROBE)


def _demo_program(*args: str) -> None:
    """Its findings (stdout) go to the terminal; library warnings and bars (stderr) to `<folder>/demo.log`,
    and to the terminal too when verbose."""
    from tasks.execution.terminal import verbose

    command = f"python -m containers.demo {' '.join(args)}"
    if verbose():
        if subprocess.run([sys.executable, "-m", "containers.demo", *args]).returncode != 0:
            raise UserError(f"the demo program failed: {command}")
        return
    done = subprocess.run([sys.executable, "-m", "containers.demo", *args], stderr=subprocess.PIPE)
    log = Path(args[1]) / "demo.log"
    if log.parent.is_dir():  # the world's folder exists once `write` ran
        with open(log, "ab") as handle:
            handle.write(f"== {command}\n".encode() + done.stderr)
    else:
        sys.stderr.buffer.write(done.stderr)
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise UserError(f"the demo program failed ({lines[-1] if lines else command}); log: {log}")


def run_demo(args: argparse.Namespace) -> int:
    """Generate (or reuse) the demo world, then run the pipeline on it as a user would."""
    from tasks.commands.sort import run_sortings

    folder = args.folder.resolve()
    _demo_program("write", str(folder), "--duration", str(args.duration), *(["--overwrite"] * args.overwrite))
    paths = load_paths(
        projects_file=folder / "projects.yaml",
        subjects_dir=folder / "subjects",
        exclusions_project="shared",
        cache_file=folder / "subjects" / "file_table_cache.parquet",
    )
    export_paths(paths)
    # A demo sorter other than the last one replaces the options (the chain's steps stay done; the sort
    # reruns). No human curates a demo: its sorter_output holds no manual work to keep.
    run_args = argparse.Namespace(
        **vars(args),
        opts=demo_options(folder, getattr(args, "sorter", "tridesclous2")),
        replace_opts=True,
        refresh_segments=False,
        prepro_only=False,
        discard_curation=True,
    )
    print("\n".join(explain_demo_options(run_args.opts)))
    status = run_sortings(paths, [DEMO_TARGET], run_args)
    if status == 0:
        _demo_program("report", str(folder), str(resolve(paths, DEMO_TARGET).sorting.root))
        status = run_demo_postpro(paths, DEMO_TARGET, run_args)
    return status


DRIFT = "preprocessing.drift_correction"
# Why the demo's options differ from the chronic defaults, per key (keys not listed differ for the same
# reason as their neighbours: the localization method's own parameters, the sorter's).
WHY = {
    f"{DRIFT}.estimate_motion_kwargs.bin_s": "the demo's drift is a 25 um zigzag with a 60 s period (at the "
    "default --duration): motion bins much shorter than the period follow it (60 s suit hours of slow drift)",
    f"{DRIFT}.clean_motion_kwargs.sigma_smooth_s": "smoothing flattens the zigzag's corners: a few seconds "
    "at most (10 s halved it: 4.3 um RMS error)",
    f"{DRIFT}.localize_peaks_kwargs.method": "grid_convolution is ~9x faster than monopolar_triangulation "
    "on 2 cores, as accurate on these peaks",
    f"{DRIFT}.estimate_motion_kwargs.conv_engine": "numpy: no GPU needed",
    "preprocessing.common_reference.reference": "a global median: the local median costs half of each "
    "chunk on 2 cores",
    "sorting.sorter_name": "a sorter that runs here (Kilosort 2.5 needs MATLAB and a GPU)",
    "sorting.sorter_params.detect_threshold": "at tridesclous2's default 5, this generated world sorted into "
    "246 units for its 40 true ones, most of them spikes at chance times (6.5: 34 units, every unit "
    "with SNR > 5 found)",
}


def explain_demo_options(opts_path: Path) -> list[str]:
    """Which options the demo uses and why they differ from the chronic defaults (one line per reason)."""
    import yaml

    from tasks.options.diff import diff_against

    chronic = "sorting_chronic_df.yaml"
    diff = diff_against(yaml.safe_load(Path(opts_path).read_text()), chronic)
    lines = [f"demo options: {opts_path}; against the chronic defaults ({chronic}):"]
    for key, shipped, used in diff:
        if key in WHY:
            lines.append(f"  {key.rsplit('.', 1)[-1]} {used} (chronic: {shipped}): {WHY[key]}")
    rest = len(diff) - (len(lines) - 1)
    if rest:
        lines.append(f"  and {rest} parameters of those choices (localization, sorter, no whiten/scale)")
    return lines


def demo_options(folder: Path, sorter: str) -> Path:
    """The demo's options file: `opts/sorting_demo.yaml`, or that chain with a Kilosort 4 sort (the sorting
    block of `opts/sorting_ks4_acute.yaml`), written into the demo folder. Kilosort 4 on a CPU takes long:
    the demo says how long before it starts."""
    import yaml

    demo = default_options("sorting_demo.yaml")
    if sorter == "tridesclous2":
        return demo
    opts = yaml.safe_load(demo.read_text())
    opts["sorting"] = yaml.safe_load(default_options("sorting_ks4_acute.yaml").read_text())["sorting"]
    path = folder / f"sorting_demo_{sorter}.yaml"
    atomic.write_text(path, yaml.safe_dump(opts, sort_keys=False))
    _demo_program("plan", str(folder), str(path))
    return path


def run_demo_postpro(paths: Paths, target: Target, args: argparse.Namespace) -> int:
    """The demo after its sort: a hypnogram for its world, then postprocessing with auto pre-labels."""
    from tasks.commands.postpro import run_postpro_cli
    from tasks.inputs.hypnogram import DEMO_CYCLE, demo_hypnogram
    from tasks.inputs.segments import read_segments
    from tasks.steps.postpro import resolve_hypnogram

    sorting = sorting_dir(paths, target)
    hyp = resolve_hypnogram("shared", target.experiment, target.subject)
    if not hyp.exists():
        hyp.parent.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(hyp) as tmp:
            demo_hypnogram(read_segments(sorting.segments)).to_csv(tmp, sep="\t", index=False)
    print(f"hypnogram for the demo (1 s bouts cycling {', '.join(DEMO_CYCLE)} from each file's start): {hyp}")
    print(
        "curation: no human curates a demo; units get auto pre-labels from opts/postpro_demo.yaml thresholds"
    )
    post_args = argparse.Namespace(
        **{**vars(args), "opts": default_options("postpro_demo.yaml")},
        hypnogram_project="shared",
        allow_uncurated=True,
        postpro=None,
    )
    return run_postpro_cli(paths, [target], post_args)
