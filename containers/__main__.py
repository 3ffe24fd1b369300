"""Step program: `python -m containers <step> <sorting_dir> [--n-jobs N]`, the contract executors run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m containers", description=__doc__)
    parser.add_argument("step")
    parser.add_argument("sorting_dir", type=Path)
    parser.add_argument("--n-jobs", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Thread caps first: numpy, numba and torch read them once, when they load.
    from tasks.core.threads import cap_threads_env

    cap_threads_env(args.n_jobs)

    from containers.runtime.stepping import run_step
    from tasks.core.errors import UserError

    try:
        run_step(args.step, args.sorting_dir, args.n_jobs)
    except UserError as err:
        print(f"wisc-sort step {args.step}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
