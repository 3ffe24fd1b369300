"""Benchmark postprocessing: our step (every stage, manifests) vs a plain SpikeInterface script, side by side.

Usage: python benchmarks/bench_postpro.py --sorting SORTING_DIR [--opts opts/postpro_demo.yaml] [--n-jobs 2]
SORTING_DIR: a sorted sorting directory (e.g. the demo's `demo/shared_ssd/.../sorting.imec0` after
`wisc-sort demo`). Both sides are fresh processes on a copy of it, computing the same analyzer,
extensions, quality metrics (amplitude cutoff from the sorter's amplitudes.npy) and per-state metrics
(`periods`); plots are off on both sides. Writes benchmarks/results/postpro.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from common import machine_lines, md_table, timed_process, write_result  # noqa: E402

from tasks.core.layout import SortingDir  # noqa: E402
from tasks.steps.postpro import setup_postpro  # noqa: E402
from tasks.steps.postpro_stages import PostproSet  # noqa: E402

PLAIN = """
import sys, numpy as np, pandas as pd, yaml
from pathlib import Path
from probeinterface import read_probeinterface
from spikeinterface.core import BinaryRecordingExtractor, create_sorting_analyzer
from spikeinterface.core.base import unit_period_dtype
from spikeinterface.core.sortinganalyzer import get_extension_class
from spikeinterface.extractors import read_phy
from spikeinterface.metrics.quality.misc_metrics import amplitude_cutoff
sys.path.insert(0, {repo!r})
from tasks.inputs.hypnogram import read_hypnogram, state_frames   # the state -> frames mapping: not
SpikeInterface's
from tasks.inputs.segments import read_segments

root, out, n_jobs = Path({root!r}), Path({out!r}), {n_jobs}
opts = yaml.safe_load(Path({opts!r}).read_text())
so = root / "si_output" / "sorter_output"
job = dict(n_jobs=n_jobs, chunk_duration="1s", progress_bar=False)
probe = read_probeinterface(root / "preprocessed_si_probe.json")
n_ch = probe.get_contact_count()
rate = float(read_segments(root / "segments.htsv")["imSampRate"].iloc[0])
rec = BinaryRecordingExtractor([so / "recording.dat"], rate, "int16", n_ch, is_filtered=True)
rec.set_probegroup(probe)
rec.set_channel_gains(1.0)  # as the step does for recording.dat without microvolts
rec.set_channel_offsets(0.0)
sorting = read_phy(so, load_all_cluster_properties=False).remove_empty_units()
a = opts["analyzer"]
an = create_sorting_analyzer(sorting, rec, format="binary_folder", folder=out / "analyzer", sparse=True,
                             return_in_uV=True, overwrite=True, **a["sparsity"], **job)
an.compute("random_spikes", **a["random_spikes"])
an.compute("waveforms", **a["waveforms"], **job)
an.compute("templates", **a["waveforms"])
an.compute("noise_levels", random_slices_kwargs=a["noise_levels"], **job)
for name, params in opts["extensions"].items():
    an.compute(name, **(params or {{}}), **job)
q = opts["quality_metrics"]
names = [n for n in q["metric_names"] if n != "amplitude_cutoff"]
qm = an.compute("quality_metrics", metric_names=names, metric_params=q.get("metric_params") or {{}}, seed=0,
                **job).get_data()
t = np.load(so / "spike_times.npy").ravel(); c = np.load(so / "spike_clusters.npy").ravel()
amps = np.load(so / "amplitudes.npy").ravel()
def cutoff(mask):
    out = {{}}
    for u in an.unit_ids:
        x = amps[mask & (c == u)]
        x = -x if x.size and np.median(x) < 0 else x
        out[u] = amplitude_cutoff(x) if x.size else np.nan
    return pd.Series(out)
qm["amplitude_cutoff"] = cutoff(np.ones(t.size, bool))
hyp = read_hypnogram(root / {name!r} / "hypnogram.htsv")
frames = state_frames(hyp, read_segments(root / "segments.htsv"))
cols = [qm]
for state in opts["by_hypnogram_state"]["states"]:
    iv = frames[state]
    p = np.zeros(len(iv) * len(an.unit_ids), dtype=unit_period_dtype)
    p["start_sample_index"] = np.tile(iv[:, 0], len(an.unit_ids))
    p["end_sample_index"] = np.tile(iv[:, 1], len(an.unit_ids))
    p["unit_index"] = np.repeat(np.arange(len(an.unit_ids)), len(iv))
    ext = get_extension_class("quality_metrics")(an)
    per = [n for n in names if n != "snr"]
    ext.set_params(save=False, metric_names=per, metric_params=q.get("metric_params") or {{}}, periods=p,
                   delete_existing_metrics=True, seed=0)
    ext.run(save=False, **job)
    df = ext.get_data()
    inside = np.zeros(t.size, bool)
    for s, e in iv:
        inside |= (t >= s) & (t < e)
    df["amplitude_cutoff"] = cutoff(inside)
    cols.append(df.add_suffix("_" + state))
pd.concat(cols, axis=1).to_csv(out / "metrics.csv")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sorting", type=Path, required=True)
    parser.add_argument("--opts", type=Path, default=REPO / "opts" / "postpro_demo.yaml")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    opts = yaml.safe_load(args.opts.read_text())
    opts["plots"] = {"enabled": False}
    opts["curation"] = {}
    work = Path(tempfile.mkdtemp(prefix="bench_postpro_", dir=args.workdir))
    source = SortingDir(args.sorting.resolve())
    hypnogram = next(source.root.glob("*/hypnogram.htsv"), None)
    if hypnogram is None:
        raise SystemExit(f"{source.root}: no <set>/hypnogram.htsv to reuse; run `wisc-sort demo` first")
    opts_path = work / "bench.yaml"
    opts_path.write_text(yaml.safe_dump(opts, sort_keys=False))
    log = work / "bench.log"
    ours, plain = [], []
    for i in range(args.repeat):
        copy = SortingDir(work / f"sorting{i}")
        ignore = shutil.ignore_patterns(
            *[p.name for p in source.root.iterdir() if (p / "postpro_opts.yaml").exists()]
        )
        shutil.copytree(source.root, copy.root, ignore=ignore, symlinks=True)
        for manifest in copy.pipeline.glob("postpro.*"):
            manifest.unlink()
        (copy.sorter_output / "cluster_info.tsv").unlink(missing_ok=True)
        setup_postpro(copy, opts_path, hypnogram=hypnogram)
        pset = PostproSet(copy, "bench")
        step = [sys.executable, "-m", "containers", pset.step, str(copy.root), "--n-jobs", str(args.n_jobs)]
        env_step = ["env", "WISC_ALLOW_UNCURATED=1", *step]
        ours.append(timed_process(env_step, log))
        script = work / f"plain{i}.py"
        out = work / f"plain{i}"
        out.mkdir()
        script.write_text(
            PLAIN.format(
                repo=str(REPO),
                root=str(copy.root),
                out=str(out),
                n_jobs=args.n_jobs,
                opts=str(opts_path),
                name="bench",
            )
        )
        plain.append(timed_process([sys.executable, str(script)], log))
    best_ours, best_plain = min(w for w, _ in ours), min(w for w, _ in plain)
    import pandas as pd

    units = len(pd.read_csv(work / "sorting0" / "bench" / "metrics.csv"))
    rows = [
        [
            "pipeline step (postpro.<NAME>, manifests)",
            best_ours,
            min(c for _, c in ours),
            best_ours / best_plain,
        ],
        ["plain SpikeInterface script", best_plain, min(c for _, c in plain), 1.0],
    ]
    text = "\n".join(
        [
            "# Postprocessing: pipeline step vs plain SpikeInterface",
            "",
            f"Sorting: {source.root} ({units} units); options {args.opts.name}",
            f"(plots off, same on both sides); n_jobs {args.n_jobs}; best of {args.repeat} fresh processes",
            "each (import, analyzer, extensions,",
            "quality metrics, amplitude cutoff from amplitudes.npy, per-state metrics with `periods`).",
            "",
            md_table(["run", "wall s", "CPU s", "ratio to plain"], rows),
            "",
            f"Goal: ratio <= 1.05. Measured: {best_ours / best_plain:.3f}.",
            "",
            *machine_lines(),
        ]
    )
    write_result("postpro", text + "\n")


if __name__ == "__main__":
    main()
