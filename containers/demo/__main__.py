"""The demo's compute as programs the planning layer runs: `python -m containers.demo write|report ...`.

`write FOLDER --duration S [--overwrite]` generates the demo world (or says it reuses it);
`plan FOLDER OPTS` says where and how long a Kilosort 4 sort runs;
`report FOLDER SORTING_DIR` prints the cleaned motion's error and the sort's accuracy against the truth.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tasks.core.errors import UserError


def write(folder: Path, duration_s: float, overwrite: bool) -> None:
    from containers.demo import world

    if overwrite or not (folder / world.MARKER).exists():
        print(f"writing the demo world ({duration_s:.0f} s of 384-channel NP1.0 data) to {folder} ...")
        world.write_demo_world(folder, duration_s=duration_s, overwrite=overwrite)
    else:
        print(f"reusing the demo world in {folder} (--overwrite to regenerate)")


def report(folder: Path, sorting_dir: Path) -> None:
    """Compare what the pipeline found with the demo world's ground truth."""
    import numpy as np
    import yaml

    from containers.demo.ground_truth import compare_to_ground_truth, read_demo_ground_truth
    from containers.motion.stages import load_motion, motion_error_um
    from tasks.core.layout import SortingDir

    sorting = SortingDir(sorting_dir)
    truth = np.load(folder / "ground_truth" / "motion.npz")
    estimated = load_motion(sorting.preprocessing / "motion_non_rigid_clean.npz")
    error = motion_error_um(estimated, truth["displacement_um"], truth["times_s"], truth["depths_um"])
    print(f"motion vs ground truth: RMS error {error:.2f} um (true drift: 25 um peak to peak zigzag)")
    frames, units, rate, snr = read_demo_ground_truth(folder / "ground_truth")
    sorter = (yaml.safe_load(sorting.opts.read_text()).get("sorting") or {}).get("sorter_name")
    _, summary = compare_to_ground_truth(sorting.sorter_output, frames, units, rate, snr)
    print(f"sorting ({sorter}) vs ground truth: {summary}")


def plan(folder: Path, opts_path: Path) -> None:
    """Say, before a long sort starts, where Kilosort 4 will run and how long it takes on a CPU."""
    import numpy as np
    import yaml

    from containers.sorters import kilosort4

    with np.load(folder / "ground_truth" / "sorting.npz") as truth:
        seconds = int(truth["num_samples"]) / float(truth["sampling_frequency"])
    params = yaml.safe_load(opts_path.read_text())["sorting"].get("sorter_params") or {}
    print(kilosort4.demo_plan(seconds, 384, params))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m containers.demo", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    w = sub.add_parser("write")
    w.add_argument("folder", type=Path)
    w.add_argument("--duration", type=float, required=True)
    w.add_argument("--overwrite", action="store_true")
    r = sub.add_parser("report")
    r.add_argument("folder", type=Path)
    r.add_argument("sorting_dir", type=Path)
    p = sub.add_parser("plan")
    p.add_argument("folder", type=Path)
    p.add_argument("opts", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.action == "write":
            write(args.folder, args.duration, args.overwrite)
        elif args.action == "plan":
            plan(args.folder, args.opts)
        else:
            report(args.folder, args.sorting_dir)
    except UserError as err:
        print(f"wisc-sort demo: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
