"""Benchmark motion estimation on the demo world's known drift: the lab's configuration and SI's presets.

Usage: python benchmarks/bench_motion.py [--duration 40] [--world DIR] [--n-jobs 2] [--bin-s S] [--own-peaks]
       [--preset-bin-s] [--presets NAME ...]
Writes benchmarks/results/motion.md. Each configuration runs the pipeline's own stage functions
(containers.motion.stages: resolve_drift_params, detect/localize/estimate/clean) on the pipeline's recording
(the demo world's kept segments through the chain before drift correction), so the numbers are what
`wisc-sort sort` runs. Peaks are detected once (the lab's detect_kwargs) and shared by every configuration
unless --own-peaks; localizations are shared between configurations with identical localization kwargs.
The chain is computed once into a float32 binary that every stage reads, so stages are timed alone; the
pipeline's cost is rebuilt as 2 chain passes (its peaks and peak_locations steps) + the stages.
"""

from __future__ import annotations

import argparse
import copy
import gc
import inspect
import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    REPO,
    chain_summary,
    demo_segments,
    drift_params,
    ensure_demo_world,
    ground_truth,
    load_average,
    machine_lines,
    md_table,
    timer,
    write_result,
)

LAB_OPTS = REPO / "opts" / "sorting_chronic_df.yaml"
PRESETS = (
    "nonrigid_accurate",
    "nonrigid_fast_and_accurate",
    "rigid_fast",
    "dredge",
    "dredge_fast",
    "medicine",
    "kilosort_like",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of demo world (default 40)")
    parser.add_argument("--world", type=Path, help="demo world folder, reused if its duration matches")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--bin-s", type=float, help="lab bin_s and smoothing (default duration / 30)")
    parser.add_argument("--presets", nargs="*", default=list(PRESETS), help="presets to run (default all)")
    parser.add_argument("--own-peaks", action="store_true", help="detect with each config's detect_kwargs")
    parser.add_argument(
        "--preset-bin-s", action="store_true", help="also run each preset with the lab's bin_s and cleaning"
    )
    return parser.parse_args(argv)


def _key(obj: dict) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _localize_key(kwargs: dict) -> str:
    """Localization kwargs with the method's defaults filled in: equal keys mean equal work."""
    from spikeinterface.sortingcomponents.peak_localization.method_list import peak_localization_methods

    params = inspect.signature(peak_localization_methods[kwargs["method"]].__init__).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    defaults.pop("return_output", None)
    return _key({**defaults, **kwargs})


def _effective_bin_s(estimate: dict) -> float | None:
    from spikeinterface.sortingcomponents.motion.motion_estimation import estimate_motion_methods

    if "bin_s" in estimate:
        return estimate["bin_s"]
    param = inspect.signature(estimate_motion_methods[estimate["method"]].run).parameters.get("bin_s")
    return None if param is None else param.default


def configurations(bin_s: float, presets: list[str], preset_bin_s: bool) -> list[tuple[str, dict]]:
    """(label, drift_correction step_params) in the order reported."""
    import yaml

    def lab(name: str) -> dict:
        drift = copy.deepcopy(drift_params(yaml.safe_load((REPO / "opts" / name).read_text())))
        drift["estimate_motion_kwargs"]["bin_s"] = bin_s
        drift["clean_motion_kwargs"]["sigma_smooth_s"] = bin_s
        return drift

    configs = [
        (f"lab default (chronic/acute opts, bin_s {bin_s:g})", lab("sorting_chronic_df.yaml")),
        (f"demo opts (grid_convolution, bin_s {bin_s:g})", lab("sorting_demo.yaml")),
    ]
    clean = configs[0][1]["clean_motion_kwargs"]
    for preset in presets:
        configs.append((f"preset {preset}", {"preset": preset}))
        resolved = _resolve({"preset": preset})
        differs = _effective_bin_s(resolved["estimate_motion_kwargs"]) != bin_s
        if preset_bin_s and differs and _runs_here(resolved):
            scaled = {
                "preset": preset,
                "estimate_motion_kwargs": {"bin_s": bin_s},
                "clean_motion_kwargs": clean,
            }
            configs.append((f"preset {preset} + bin_s {bin_s:g}, lab cleaning", scaled))
    return configs


def _resolve(drift: dict) -> dict:
    from containers.motion.stages import resolve_drift_params

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return resolve_drift_params(drift)


def _runs_here(resolved: dict) -> bool:
    from containers.motion.stages import check_motion_dependencies
    from tasks.core.errors import UserError

    try:
        check_motion_dependencies(resolved)
    except UserError:
        return False
    return True


class Runner:
    """Runs configurations on one recording, caching peaks and locations (their times reported with them)."""

    def __init__(
        self, rec, chain_s: float, job_kwargs: dict, truth: tuple, shared_detect: dict | None
    ) -> None:
        self.rec, self.chain_s, self.job_kwargs = rec, chain_s, job_kwargs
        self.truth, self.shared_detect = truth, shared_detect
        self.duration = rec.get_total_duration()
        self.peaks: dict[str, tuple] = {}  # key -> (peaks, seconds, label of who computed it)
        self.locations: dict[str, tuple] = {}

    def _peaks(self, detect: dict, label: str) -> tuple:
        from containers.motion.stages import detect_peaks_stage

        key = _key(detect)
        if key not in self.peaks:
            t0 = time.perf_counter()
            found = detect_peaks_stage(self.rec, detect, self.job_kwargs)
            self.peaks[key] = (found, time.perf_counter() - t0, label)
        return self.peaks[key]

    def _locations(self, peaks_key: str, peaks, localize: dict, label: str) -> tuple:
        from containers.motion.stages import localize_peaks_stage

        key = peaks_key + _localize_key(localize)
        if key not in self.locations:
            t0 = time.perf_counter()
            found = localize_peaks_stage(self.rec, peaks, localize, self.job_kwargs)
            self.locations[key] = (found, time.perf_counter() - t0, label)
        return self.locations[key]

    def run(self, label: str, drift: dict) -> dict:
        from containers.motion.stages import (
            clean_motion_stage,
            estimate_motion_stage,
            motion_error_um,
            resolve_drift_params,
        )

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the torch fallback is listed in the notes
            resolved = resolve_drift_params(drift)
        estimate = resolved["estimate_motion_kwargs"]
        row = {"label": label, "estimate": estimate["method"], "notes": list(resolved["notes"].values())}
        row["localize"] = resolved["localize_peaks_kwargs"]["method"]
        row["bin_s"] = _effective_bin_s(estimate)
        if not _runs_here(resolved):
            row["skipped"] = "needs torch: not installed"
            return row
        detect = self.shared_detect or resolved["detect_kwargs"]
        peaks, row["detect_s"], by = self._peaks(detect, label)
        row["n_peaks"] = int(peaks.size)
        row["detect_shared"] = by != label
        localize = resolved["localize_peaks_kwargs"]
        locations, row["localize_s"], by = self._locations(_key(detect), peaks, localize, label)
        row["localize_shared"] = by != label
        t: dict = {}
        with timer(t, "estimate"):
            motion = estimate_motion_stage(self.rec, peaks, locations, estimate, self.job_kwargs)
        with timer(t, "clean"):
            cleaned = clean_motion_stage(motion, resolved["clean_motion_kwargs"])
        row["estimate_s"], row["clean_s"] = t["estimate"], t["clean"]
        row["rms_raw"] = motion_error_um(motion, *self.truth)
        row["rms_clean"] = motion_error_um(cleaned, *self.truth)
        # As the pipeline runs it: the peaks and peak_locations steps each compute the chain again.
        stages = row["detect_s"] + row["localize_s"] + row["estimate_s"] + row["clean_s"]
        row["pipeline_s"] = 2 * self.chain_s + stages
        return row


def report(args, rows: list[dict], setup: dict, rec, n_peaks_label: str, load_before: str) -> str:
    duration = rec.get_total_duration()
    table_rows, skipped = [], []
    for r in rows:
        if "skipped" in r:
            skipped.append(f"- {r['label']} ({r['estimate']}): {r['skipped']}")
            continue
        stages = r["pipeline_s"] - 2 * setup["chain_s"]
        table_rows.append(
            [
                r["label"],
                f"{r['localize']} / {r['estimate']}",
                float(r["bin_s"]) if r["bin_s"] is not None else "-",
                r["n_peaks"],
                f"{r['detect_s']:.1f}{'*' if r['detect_shared'] else ''}",
                f"{r['localize_s']:.1f}{'*' if r['localize_shared'] else ''}",
                round(duration / r["localize_s"], 2),
                round(r["estimate_s"], 2),
                round(r["clean_s"], 4),
                round(duration / stages, 2),
                round(duration / r["pipeline_s"], 2),
                round(r["rms_raw"], 2),
                round(r["rms_clean"], 2),
            ]
        )
    headers = ["configuration", "localize / estimate", "bin_s", "peaks", "detect s", "localize s",
               "localize x RT", "estimate s", "clean s", "stages x RT", "pipeline x RT",
               "RMS raw um", "RMS clean um"]  # fmt: skip
    notes = sorted({n for r in rows for n in r.get("notes", [])})
    lines = [
        "# Motion estimation benchmark",
        "",
        *machine_lines(),
        f"- load average (1/5/15 min) before: {load_before}; after: {load_average()} "
        "(other engineers share the machine)",
        f"- data: demo world (containers.demo.world, 384-channel NP1.0, {args.duration:g} s generated, rigid "
        f"zigzag 25 um peak to peak, period {args.duration / 2:g} s), kept recording {duration:.1f} s "
        f"(flat bout excluded); world written in {setup['world_s']:.1f} s"
        + (" (reused)" if setup["reused"] else ""),
        "- recording: the pipeline's (load_kept_recording + preprocess_for_motion, float32 uV) with the lab's"
        f" chain: {chain_summary(LAB_OPTS, upto_drift=True)}; n_jobs {args.n_jobs}, chunk 1 s; threads"
        " capped to n_jobs",
        f"- chain pass (that recording computed once, written to a float32 binary): {setup['chain_s']:.1f} s"
        f" = {duration / setup['chain_s']:.2f}x real time; detect/localize below read that binary, so they"
        " time the method alone",
        f"- peaks: {n_peaks_label}; `*` = time of a shared computation (done once, reported for each user)",
        "- RMS: motion.stages.motion_error_um (after removing a constant offset), on the raw estimate"
        " and after the configuration's cleaning (a preset alone cleans with SI's defaults: 30 um/s, no"
        " smoothing)",
        "- x RT: seconds of recording per second of wall time (>1 is faster than real time); stages ="
        " detect + localize + estimate + clean; pipeline = 2 chain passes (its peaks and peak_locations"
        " steps each compute the chain) + stages",
        f"- SI's decentralized with convergence_method lsmr (the presets' default; the lab uses lsqr_robust)"
        f" calls gc.collect() after every lsmr iteration (decentralized.py, 'Cleanup lsmr memory'): one"
        f" full collection in this process takes {setup['gc_s']:.3f} s, so hundreds of them dominate the"
        " presets' estimate time",
        "",
        md_table(headers, table_rows),
        "",
    ]
    if skipped:
        lines += ["Not run:", "", *skipped, ""]
    if notes:
        lines += ["Resolution notes:", "", *(f"- {n}" for n in notes), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tasks.core.threads import cap_threads_env

    cap_threads_env(args.n_jobs)  # before numpy: as the step program does
    from containers.recording.chain import load_kept_recording, preprocess_for_motion
    from containers.runtime.stepping import StepContext
    from containers.runtime.threads import cap_threads_runtime

    cap_threads_runtime(args.n_jobs)
    load_before = load_average()
    bin_s = args.bin_s or max(1.0, round(args.duration / 30, 1))
    scratch = Path(tempfile.mkdtemp(prefix="bench-motion-"))
    world = args.world or scratch / "world"
    try:
        setup: dict = {}
        setup["world_s"], setup["reused"] = ensure_demo_world(world, args.duration)
        configs = configurations(bin_s, args.presets, args.preset_bin_s)
        rec = preprocess_for_motion(load_kept_recording(demo_segments(world)), _lab_chain())
        # The step's own job kwargs; no progress bars in a benchmark's output.
        job_kwargs = {**StepContext(None, {}, args.n_jobs, None).job_kwargs, "progress_bar": False}  # type: ignore[arg-type]
        # The chain (local median CMR on 384 channels) costs more than any stage: computed once, to disk;
        # every stage then reads it, and the pipeline's cost is rebuilt as 2 chain passes + the stages.
        start = time.perf_counter()
        cached = rec.save(folder=scratch / "chain", format="binary", **job_kwargs)
        setup["chain_s"] = time.perf_counter() - start
        print(f"chain pass: {setup['chain_s']:.1f} s", flush=True)
        shared = None if args.own_peaks else _resolve(configs[0][1])["detect_kwargs"]
        runner = Runner(cached, setup["chain_s"], job_kwargs, ground_truth(world), shared)
        rows = []
        for label, drift in configs:
            row = runner.run(label, drift)
            print(json.dumps({k: v for k, v in row.items() if k != "notes"}, default=str), flush=True)
            rows.append(row)
        peaks_label = (
            "each configuration's own detect_kwargs"
            if args.own_peaks
            else "detected ONCE with the lab's detect_kwargs (locally_exclusive, threshold 5, radius 50 um) "
            "and shared by every configuration (presets would detect at threshold 8, radius 75-80 um)"
        )
        start = time.perf_counter()
        gc.collect()
        setup["gc_s"] = time.perf_counter() - start
        write_result("motion", report(args, rows, setup, rec, peaks_label, load_before))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _lab_chain() -> list[dict]:
    import yaml

    return yaml.safe_load(LAB_OPTS.read_text())["preprocessing"]


if __name__ == "__main__":
    raise SystemExit(main())
