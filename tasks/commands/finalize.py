"""`wisc-sort finalize`: check every input, then finalize each sorting (or print its plan with --dry-run)."""

from __future__ import annotations

import argparse

from tasks.core.locks import hold_sortings
from tasks.finalize.finalize import check_room_together, describe, plan_finalize, run_finalize
from tasks.inputs.resolve import Target
from tasks.settings import Paths
from tasks.steps.finalize import make_request


def run_finalize_cli(paths: Paths, targets: list[Target], args: argparse.Namespace) -> int:
    """Every input is checked before any is touched; then each is finalized (or its plan printed)."""
    requests = [make_request(paths, t, args.postpro, args.to, args.keep_recording_dat) for t in targets]
    # One command per sorting (exit 10): the sorting and where it goes, held from the plan to the move.
    roots = [r.source.root for r in requests] + [r.destination.root for r in requests]
    with hold_sortings(roots):
        return _finalize(requests, args)


def _finalize(requests: list, args: argparse.Namespace) -> int:
    plans = [plan_finalize(req) for req in requests]  # UserError here: nothing changed anywhere
    check_room_together(plans)
    for plan in plans:
        print("\n".join(describe(plan) if args.dry_run else run_finalize(plan)))
    return 0
