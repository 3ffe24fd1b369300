"""Step program: `python -m containers <step> <sorting_dir> [--n-jobs N] [flags]`, the contract executors run.

Everything a step needs besides the sorting directory comes as a flag, resolved by the planning layer on
the host (a container has no luigi.cfg and must not guess): the disk reserve, the curation override, the
environment id its signature pins, and what the Luigi task handed over (recorded in the manifest).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m containers", description=__doc__)
    parser.add_argument("step")
    parser.add_argument("sorting_dir", type=Path)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--disk-reserve-gb", type=float, default=0.0, help="GiB to keep free when writing")
    parser.add_argument(
        "--allow-uncurated", action="store_true", help="postprocess units phy left unlabelled"
    )
    parser.add_argument(
        "--device", default="cpu", help="the engine's device: cpu or cuda:N (resolved by the host)"
    )
    parser.add_argument(
        "--environment", default="", help="what the step's signature pins (docker:<image id>)"
    )
    parser.add_argument(
        "--record", action="append", default=[], metavar="KEY=VALUE", help="recorded in the step's manifest"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Thread caps first: numpy, numba and torch read them once, when they load.
    from tasks.core.threads import cap_threads_env

    cap_threads_env(args.n_jobs)

    from containers.runtime.stepping import StepSettings, run_step
    from tasks.core.errors import UserError

    try:
        records = dict(item.split("=", 1) for item in args.record)
    except ValueError:
        print(f"wisc-sort step {args.step}: error: --record takes KEY=VALUE", file=sys.stderr)
        return 2
    settings = StepSettings(
        n_jobs=args.n_jobs,
        disk_reserve_bytes=int(max(args.disk_reserve_gb, 0.0) * 2**30),
        allow_uncurated=args.allow_uncurated,
        environment=args.environment,
        records=records,
        device=args.device,
    )
    try:
        run_step(args.step, args.sorting_dir, settings)
    except UserError as err:
        print(f"wisc-sort step {args.step}: error: {err}", file=sys.stderr)
        return 2
    return 0


def interrupted_quietly(argv: list[str] | None = None) -> int:
    """main(), ending in one line on Ctrl-C (the terminal signals the step with its command): no traceback;
    the command says what happened, and its outputs never look done without their manifest."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("wisc-sort step: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(interrupted_quietly())
