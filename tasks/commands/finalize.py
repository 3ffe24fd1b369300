"""`wisc-sort finalize`: check every input, then finalize each sorting (or print its plan with --dry-run)."""

from __future__ import annotations

import argparse

from tasks.finalize.finalize import check_room_together, describe, plan_finalize, run_finalize
from tasks.inputs.resolve import Target
from tasks.report.write import refresh_report
from tasks.settings import Paths
from tasks.steps.finalize import make_request


def run_finalize_cli(paths: Paths, targets: list[Target], args: argparse.Namespace) -> int:
    """Every input is checked before any is touched; then each is finalized (or its plan printed)."""
    requests = [make_request(paths, t, args.postpro, args.to, args.keep_recording_dat) for t in targets]
    plans = [plan_finalize(req) for req in requests]  # UserError here: nothing changed anywhere
    check_room_together(plans)
    for plan in plans:
        if args.dry_run:
            print("\n".join(describe(plan)))
            continue
        print("\n".join(run_finalize(plan)))
        if refresh_report(plan.request.destination):  # the finalize record, in the sorting's new home
            print(f"report: {plan.request.destination.report}")
    return 0
