"""`wisc-sort export-nwb`: each sorting as one NWB file, after its postprocessing set (nwb/sorting.nwb)."""

from __future__ import annotations

import argparse
from dataclasses import asdict

import yaml

from tasks.execution.build import build, executor_name
from tasks.execution.executors import get_executor
from tasks.inputs.resolve import Target, sorting_dir
from tasks.settings import Paths
from tasks.steps.export import ExportNwb
from tasks.steps.nwb_inputs import name_postpro_set
from tasks.steps.registry import NWB_FILE


def run_export_cli(paths: Paths, targets: list[Target], args: argparse.Namespace) -> int:
    """Check every target (a sorting, a postprocessing set to export) before anything runs, then run."""
    get_executor(executor_name(args)).check(["nwb"], [{}])
    sortings = [sorting_dir(paths, target) for target in targets]
    for sorting in sortings:  # every target checked before any opts.yaml gains its nwb block
        name_postpro_set(sorting, args.postpro, check_only=True)
    tasks = []
    for target, sorting in zip(targets, sortings, strict=True):
        name, message = name_postpro_set(sorting, args.postpro)
        print(f"== NWB export of {sorting.root} (postprocessing set {name})")
        if message:
            print(message)
        tasks.append(
            ExportNwb(
                **asdict(target),
                n_jobs=args.n_jobs,
                executor=executor_name(args),
                hypnogram_project=args.hypnogram_project,
                allow_uncurated=args.allow_uncurated,
            )
        )
    ok = build(tasks, args)
    for sorting in sortings:
        if sorting.path(NWB_FILE).exists():
            print(f"nwb: {sorting.path(NWB_FILE)}")
        block = yaml.safe_load(sorting.opts.read_text()).get("nwb") or {}
        if not {"species", "age"} <= set(block):
            print(
                f"for DANDI, add species (e.g. Mus musculus) and age (ISO 8601, e.g. P90D) to the nwb block "
                f"of {sorting.opts} and export again (nwbinspector counts a missing age as critical)"
            )
    return 0 if ok else 1
