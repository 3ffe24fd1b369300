"""`wisc-sort`: the command line (segments, sort, postpro, finalize, images, demo, scheduler, status, ...)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

from tasks.core.errors import UserError, WiscWarning

DEMO_SORTERS = ("tridesclous2", "kilosort4")  # the first is the default


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + message; users get one line
        self.exit(2, f"wisc-sort: error: {message} (see {self.prog} --help)\n")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    prefix = "wisc-sort: warning" if issubclass(category, WiscWarning) else f"{category.__name__}"
    print(f"{prefix}: {message}", file=sys.stderr)


def _add_paths(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--projects-file", type=Path, help="projects.yaml (default: [wisc] projects_file)")
    parser.add_argument("--subjects-dir", type=Path, help="folder of <SUBJECT>.yml files")
    parser.add_argument("--exclusions-project", help="project holding exclusions (default: shared)")
    parser.add_argument("--cache-file", type=Path, help="Parquet file-table cache")


def _add_target(parser: argparse.ArgumentParser) -> None:
    _add_paths(parser)
    parser.add_argument("--project", "--projectName", required=True, help="project to sort into")
    parser.add_argument("--experiment", "--experimentName", required=True)
    parser.add_argument("--alias", "--aliasName", default="full")
    parser.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="SUBJECT,PROBE",
        help="repeat for several probes/subjects",
    )


def _add_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n-jobs", "--n_jobs", type=int, default=1, help="cores per step")
    parser.add_argument("--workers", type=int, default=1, help="Luigi workers (parallel steps)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--local-scheduler", action="store_true", help="no luigid (default)")
    where.add_argument("--scheduler-url", help="central luigid, e.g. http://127.0.0.1:8082/")
    parser.add_argument(
        "--executor", default=None, help="local (default), docker or slurm; or [wisc] executor"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="steps' output, library warnings and Luigi's summary here too"
    )


def _add_images(sub) -> None:
    images = sub.add_parser("images", help="build the step images (Dockerfile.si, Dockerfile.ks25)")
    actions = images.add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    build = actions.add_parser("build", help="docker build one image; names and tags from luigi.cfg [wisc]")
    build.add_argument("kind", choices=("si", "ks25"))
    build.add_argument("--variant", choices=("cuda", "cpu"), default="cuda", help="cpu: torch from --wheels")
    build.add_argument("--base-image", help="BASE_IMAGE build argument (e.g. from `wisc-sort images base`)")
    build.add_argument("--wheels", type=Path, help="folder of wheels pip may use (the CPU torch wheel)")
    build.add_argument("--ca-bundle", type=Path, help="CA bundle for pip (default: the host's, if any)")
    build.add_argument("--no-torch", action="store_true", help="leave torch and kilosort4 out")
    build.add_argument("--tag", help="image name:tag (default: [wisc] image_<kind>)")
    base = actions.add_parser("base", help="a Debian base image by debootstrap (no registry)")
    base.add_argument("--name", default="wisc-base:bookworm")
    base.add_argument("--suite", default="bookworm")
    actions.add_parser("list", help="the configured image names and whether this host has them")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="wisc-sort", description="Reproducible spike sorting of SpikeGLX recordings.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    seg = sub.add_parser("segments", help="print the files, exclusions and segment table of a sorting")
    _add_target(seg)
    seg.add_argument("--tsv", action="store_true", help="print only the segment table, as TSV")
    seg.add_argument(
        "--with-proposed", action="store_true", help="add the rows `scan-artifacts` proposed (yours win)"
    )

    scan = sub.add_parser("scan-artifacts", help="propose exclusions: flat, saturated, transient bouts")
    _add_target(scan)
    scan.add_argument("--opts", "--optionsPath", type=Path, help="options file with an `artifacts` block")

    sort = sub.add_parser("sort", help="set up a sorting and run its steps")
    _add_target(sort)
    _add_run(sort)
    sort.add_argument(
        "--opts", "--optionsPath", type=Path, help="options file (first run, or with --replace-opts)"
    )
    sort.add_argument("--prepro-only", "--prepro_only", action="store_true", help="stop before the sort")
    sort.add_argument(
        "--replace-opts", action="store_true", help="replace the sorting's opts.yaml with --opts"
    )
    sort.add_argument("--refresh-segments", action="store_true", help="adopt changed exclusions/files")
    sort.add_argument(
        "--discard-curation", action="store_true", help="rerun a changed sort although phy curation exists"
    )
    sort.add_argument(
        "--from-folder",
        "--from_folder",
        action="store_true",
        help="accepted for the lab's habit: the sorting folder is always the truth",
    )

    refresh = sub.add_parser("refresh-cache", help="rescan every subject's SpikeGLX files into the cache")
    _add_paths(refresh)

    post = sub.add_parser("postpro", help="postprocess a sorting: gate, analyzer, metrics (per state), plots")
    _add_target(post)
    _add_run(post)
    which = post.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--opts", "--optionsPath", type=Path, help="first run: e.g. opts/postpro_chronic_df.yaml"
    )
    which.add_argument(
        "--postpro", "--postproName", metavar="NAME", help="rerun set NAME from its own postpro_opts.yaml"
    )
    post.add_argument("--hypnogram-project", "--hypnogramProject", help="project holding hypnogram.htsv")
    post.add_argument("--allow-uncurated", action="store_true", help="run although units lack a phy group")
    post.add_argument("--replace-opts", action="store_true", help="replace the set's postpro_opts.yaml")
    _add_images(sub)

    nwb = sub.add_parser("export-nwb", help="write each sorting as one NWB file (after postprocessing)")
    _add_target(nwb)
    _add_run(nwb)
    nwb.add_argument("--postpro", "--postproName", metavar="NAME", help="the set to export (first export)")
    nwb.add_argument("--hypnogram-project", "--hypnogramProject", help="if postprocessing must rerun")
    nwb.add_argument("--allow-uncurated", action="store_true", help="if postprocessing must rerun")

    demo = sub.add_parser("demo", help="generate a small SpikeGLX world and run the pipeline on it")
    demo.add_argument("--folder", type=Path, default=Path("demo"))
    demo.add_argument("--duration", type=float, default=120.0, help="seconds of generated recording")
    demo.add_argument("--overwrite", action="store_true", help="regenerate the demo world")
    demo.add_argument(
        "--sorter",
        choices=DEMO_SORTERS,
        default=DEMO_SORTERS[0],
        help="tridesclous2 (CPU, minutes) or kilosort4 (GPU; on a CPU it says how long first)",
    )
    _add_run(demo)
    demo.set_defaults(n_jobs=min(os.cpu_count() or 1, 4))
    _add_finalize(sub)

    scheduler = sub.add_parser("scheduler", help="start the lab's central luigid (loopback, history, GPUs)")
    scheduler.add_argument("--address", help="listen address (default: [wisc_scheduler] address, 127.0.0.1)")
    scheduler.add_argument("--port", type=int, help="port (default: [wisc_scheduler] port, 8082)")
    scheduler.add_argument("--state-dir", type=Path, help="state file, task history, logs, luigid.cfg")
    scheduler.add_argument(
        "--print-config", action="store_true", help="print the luigid config it would use and exit"
    )

    status = sub.add_parser("status", help="one line per sorting on disk: steps done/stale/missing, ...")
    status.add_argument("--projects-file", type=Path, help="projects.yaml (default: [wisc] projects_file)")
    status.add_argument("--project", "--projectName", action="append", help="only this project (repeatable)")
    status.add_argument("--experiment", "--experimentName", help="only this experiment")
    status.add_argument("--subject", help="only this subject")
    status.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


def _add_finalize(sub) -> None:
    fin = sub.add_parser("finalize", help="delete recording.dat, link postpro, move the sorting home")
    _add_target(fin)
    fin.add_argument("--postpro", "--postproName", required=True, metavar="NAME", help="postprocessing set")
    fin.add_argument("--to", "--toProject", default="shared", metavar="PROJECT", help="default: shared")
    fin.add_argument("--keep-recording-dat", "--keep_recording_dat", action="store_true", help="move it too")
    fin.add_argument("--dry-run", "--dry_run", action="store_true", help="print the plan, change nothing")


def _paths(args: argparse.Namespace):
    from tasks.settings import export_paths, load_paths

    paths = load_paths(
        projects_file=args.projects_file,
        subjects_dir=args.subjects_dir,
        exclusions_project=args.exclusions_project,
        cache_file=args.cache_file,
    )
    export_paths(paths)
    return paths


def _targets(args: argparse.Namespace):
    from tasks.inputs.resolve import Target, parse_input

    return [Target(args.project, args.experiment, args.alias, *parse_input(text)) for text in args.input]


def cmd_segments(args: argparse.Namespace) -> int:
    from tasks.commands.sort import print_plan
    from tasks.inputs.resolve import resolve

    paths = _paths(args)
    for target in _targets(args):
        resolved = resolve(paths, target)
        note = ""
        if args.with_proposed:
            from tasks.commands.artifacts import with_proposed

            resolved, proposed = with_proposed(resolved)
            note = f" (with the exclusions proposed in {proposed})"
        if args.tsv:
            resolved.segments.to_csv(sys.stdout, sep="\t", index=False)
            continue
        print_plan(resolved, note)
    return 0


def cmd_export_nwb(args: argparse.Namespace) -> int:
    from tasks.commands.export import run_export_cli

    return run_export_cli(_paths(args), _targets(args), args)


def cmd_scan_artifacts(args: argparse.Namespace) -> int:
    from tasks.commands.artifacts import run_scan

    return run_scan(_paths(args), _targets(args), args)


def cmd_refresh_cache(args: argparse.Namespace) -> int:
    from tasks.inputs.cache import refresh_cache
    from tasks.inputs.spikeglx import SessionFolders
    from tasks.inputs.subjects import list_subjects, load_subject

    paths = _paths(args)
    subjects = {}
    for name in list_subjects(paths.subjects_dir):
        subject = load_subject(paths.subjects_dir, name)
        subjects[name] = [SessionFolders(s.id, Path(s.ap), Path(s.lf)) for s in subject.sessions.values()]
    diff = refresh_cache(paths.cache_file, subjects)
    print(diff.summary())
    print(f"cache written: {paths.cache_file}")
    return 0


def cmd_sort(args: argparse.Namespace) -> int:
    from tasks.commands.sort import run_sortings

    return run_sortings(_paths(args), _targets(args), args)


def cmd_images(args: argparse.Namespace) -> int:
    from tasks.execution import images

    if args.action == "base":
        print(f"{args.name}: {images.make_base_image(args.name, args.suite)}")
    elif args.action == "build":
        ca_bundle = args.ca_bundle if args.ca_bundle is not None else images.DEFAULT_CA_BUNDLE
        tag, image = images.build_image(
            args.kind, args.variant, args.base_image, args.wheels, ca_bundle, args.tag, not args.no_torch
        )
        print(f"built {tag}: {image}")
    else:
        from tasks.execution.docker import image_id

        for kind in images.KINDS:
            name = images.image_name(kind)
            try:
                print(f"{kind}: {name} {image_id(name)}")
            except UserError as err:
                print(f"{kind}: {name} missing ({err})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tasks.commands.demo import run_demo

    return run_demo(args)


def cmd_scheduler(args: argparse.Namespace) -> int:
    from tasks.execution.scheduler import load_settings, luigid_config, run_scheduler

    settings = load_settings(address=args.address, port=args.port, state_dir=args.state_dir)
    if args.print_config:
        print(luigid_config(settings), end="")
        return 0
    return run_scheduler(settings)


def cmd_status(args: argparse.Namespace) -> int:
    from tasks.commands.status import print_status

    return print_status(args)


def cmd_postpro(args: argparse.Namespace) -> int:
    from tasks.commands.postpro import run_postpro_cli

    return run_postpro_cli(_paths(args), _targets(args), args)


def cmd_finalize(args: argparse.Namespace) -> int:
    from tasks.commands.finalize import run_finalize_cli

    return run_finalize_cli(_paths(args), _targets(args), args)


COMMANDS = {
    "segments": cmd_segments,
    "sort": cmd_sort,
    "refresh-cache": cmd_refresh_cache,
    "images": cmd_images,
    "demo": cmd_demo,
    "scheduler": cmd_scheduler,
    "status": cmd_status,
    "postpro": cmd_postpro,
}
COMMANDS["finalize"] = cmd_finalize
COMMANDS["scan-artifacts"] = cmd_scan_artifacts
COMMANDS["export-nwb"] = cmd_export_nwb


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    if getattr(args, "verbose", False):
        os.environ["WISC_VERBOSE"] = "1"  # luigi's worker processes and the demo's programs read it
    warnings.simplefilter("always", WiscWarning)
    # SIGTERM (kill, a batch system's stop) ends the command as Ctrl-C does: its step stopped, one line.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        return COMMANDS[args.command](args)
    except UserError as err:
        print(f"wisc-sort: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)  # 10: the sorting is held by another command
    except KeyboardInterrupt:
        print("wisc-sort: interrupted; completed steps are kept, rerun to resume", file=sys.stderr)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
