"""`wisc-sort finalize`: check every input, then finalize each sorting (or print its plan with --dry-run)."""

from __future__ import annotations

import argparse

from tasks.core.locks import hold_sortings
from tasks.finalize.finalize import check_room_together, describe, plan_finalize, run_finalize
from tasks.inputs.resolve import Target
from tasks.report.write import refresh_report
from tasks.settings import Paths
from tasks.steps.finalize import make_request


def run_finalize_cli(paths: Paths, targets: list[Target], args: argparse.Namespace) -> int:
    """Every input is checked before any is touched; then each is finalized (or its plan printed)."""
    requests = [make_request(paths, t, args.postpro, args.to, args.keep_recording_dat) for t in targets]
    # One command per sorting (exit 10): each sorting from its plan to the end of its move ...
    with hold_sortings([r.source.root for r in requests]):
        plans = [plan_finalize(req) for req in requests]  # UserError here: nothing changed anywhere
        check_room_together(plans)
        if args.dry_run:
            for plan in plans:
                print("\n".join(describe(plan)))
            return 0
        # ... and where it goes (two sortings could be finalized to one place): planned again under it.
        with hold_sortings([r.destination.root for r in requests]):
            plans = [plan_finalize(req) for req in requests]
            check_room_together(plans)
            for plan in plans:
                print("\n".join(run_finalize(plan)))
                if refresh_report(plan.request.destination):  # the finalize record, in its new home
                    print(f"report: {plan.request.destination.report}")
    return 0
