"""Postprocessing options (postpro_*.yaml): strict schema in SpikeInterface 0.105 terms, and their loading."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tasks.core.errors import UserError
from tasks.options.sorting import _check_map, _fail, _got, _join, _spec, _StrictLoader

# --- SpikeInterface 0.105.3 names (tests/test_postpro_options.py checks them against the installed version).
ANALYZER_KEYS = _spec("sparsity:m random_spikes:m waveforms:m noise_levels:m")
SPARSITY_KEYS = _spec("method:s radius_um:n num_channels:n peak_sign:s threshold:n amplitude_mode:s")
RANDOM_SPIKES_KEYS = _spec("method:s max_spikes_per_unit:n margin_size:n? seed:n?")
WAVEFORMS_KEYS = _spec("ms_before:n ms_after:n dtype:s?")
NOISE_LEVELS_KEYS = _spec("num_chunks_per_segment:n chunk_size:n seed:n? method:s")
# Extensions computed after the analyzer, each its own stage; value: (params, extensions it depends on).
EXTENSIONS: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    "principal_components": (_spec("n_components:n mode:s whiten:b dtype:s"), ()),
    "spike_amplitudes": ({}, ()),
    "unit_locations": (_spec("method:s radius_um:n max_distance_um:n optimizer:s feature:s"), ()),
    "template_metrics": (
        _spec("""metric_names:l? metric_params:m? upsampling_factor:n include_multi_channel_metrics:b
        depth_direction:s min_thresh_detect_peaks_troughs:n edge_exclusion_ms:n"""),
        (),
    ),
    "spike_locations": (_spec("ms_before:n ms_after:n method:s method_kwargs:m seed:n?"), ()),
    "correlograms": (_spec("window_ms:n bin_ms:n method:s"), ()),
    "isi_histograms": (_spec("window_ms:n bin_ms:n method:s"), ()),
    "template_similarity": (_spec("method:s max_lag_ms:n support:s"), ()),
}
# Quality metric -> (its parameters, the columns it writes, the extensions it needs, supports periods).
QUALITY_METRICS: dict[str, tuple[dict[str, str], tuple[str, ...], tuple[str, ...], bool]] = {
    "num_spikes": ({}, ("num_spikes",), (), True),
    "firing_rate": ({}, ("firing_rate",), (), True),
    "presence_ratio": (_spec("bin_duration_s:n mean_fr_ratio_thresh:n"), ("presence_ratio",), (), True),
    "snr": (_spec("method:s"), ("snr",), (), False),
    "isi_violation": (
        _spec("isi_threshold_ms:n min_isi_ms:n"),
        ("isi_violations_ratio", "isi_violations_count"),
        (),
        True,
    ),
    "rp_violation": (
        _spec("refractory_period_ms:n censored_period_ms:n"),
        ("rp_contamination", "rp_violations"),
        (),
        True,
    ),
    "sliding_rp_violation": (
        _spec("""min_spikes:n bin_size_ms:n window_size_s:n exclude_ref_period_below_ms:n max_ref_period_ms:n
        contamination_values:l?"""),
        ("sliding_rp_violation",),
        (),
        True,
    ),
    "firing_range": (_spec("bin_size_s:n percentiles:l"), ("firing_range",), (), True),
    "amplitude_cutoff": (
        _spec("num_histogram_bins:n histogram_smoothing_value:n amplitudes_bins_min_ratio:n"),
        ("amplitude_cutoff",),
        ("spike_amplitudes",),
        True,
    ),
    "amplitude_median": ({}, ("amplitude_median",), ("spike_amplitudes",), True),
    "drift": (
        _spec("interval_s:n min_spikes_per_interval:n direction:s min_num_bins:n"),
        ("drift_ptp", "drift_std", "drift_mad"),
        ("spike_locations",),
        True,
    ),
    "mahalanobis": ({}, ("isolation_distance", "l_ratio"), ("principal_components",), False),
    "d_prime": ({}, ("d_prime",), ("principal_components",), False),
    "nearest_neighbor": (
        _spec("max_spikes:n n_neighbors:n"),
        ("nn_hit_rate", "nn_miss_rate"),
        ("principal_components",),
        False,
    ),
    "silhouette": (_spec("method:s"), ("silhouette",), ("principal_components",), False),
    "nn_advanced": (
        _spec("""max_spikes:n min_spikes:n min_fr:n n_neighbors:n n_components:n radius_um:n
        min_spatial_overlap:n seed:n?"""),
        ("nn_isolation", "nn_noise_overlap"),
        ("principal_components",),
        False,
    ),
}
METRICS_KEYS = _spec("metric_names:l metric_params:m amplitude_cutoff_from_sorter:b")
STATE_KEYS = _spec("states:l metric_names:l? state_map:m?")
# The lab's hypnogram labels -> the states metrics are computed for; other labels (Art, NoData, ...) ignored.
STATE_MAP = {
    "N1": "NREM",
    "N2": "NREM",
    "NREM": "NREM",
    "aWk": "Wake",
    "qWk": "Wake",
    "Wake": "Wake",
    "REM": "REM",
}
CURATION_KEYS = _spec("auto_label:m?")
AUTO_LABEL_KEYS = _spec("label:s otherwise:s rules:m")
RULE_KEYS = _spec("min:n max:n")
PHY_GROUPS = ("good", "mua", "noise", "unsorted")
PLOTS_KEYS = _spec("enabled:b max_unit_plots:n?")
TOP_KEYS = _spec("analyzer:m extensions:m quality_metrics:m by_hypnogram_state:m? curation:m plots:m")
HOWTO_ALIASES = {"hyp": "by_hypnogram_state"}


def load_postpro_options(path: Path) -> dict:
    """Read and validate a postprocessing options file; UserError naming the file and key."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(), Loader=_StrictLoader)
    except OSError as err:
        raise UserError(
            f"{path}: cannot read the postprocessing options ({err.strerror}); check --opts"
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "unknown line"
        raise UserError(f"{path}: malformed YAML at {where}: {getattr(err, 'problem', err)}") from None
    return parse_postpro_options(data, str(path))


def parse_postpro_options(data: Any, src: str) -> dict:
    if not isinstance(data, dict):
        raise UserError(
            f"{src}: expected a mapping with analyzer, extensions, quality_metrics; got {_got(data)}"
        )
    data = copy.deepcopy(data)
    for old, new in HOWTO_ALIASES.items():  # the how-to's spelling
        if old in data:
            if new in data:
                _fail(src, old, f"give either {old} (the how-to's name) or {new}, not both")
            data[new] = data.pop(old)
    _check_map(src, "", data, TOP_KEYS, required=("analyzer", "quality_metrics"))
    analyzer = data["analyzer"]
    _check_map(src, "analyzer", analyzer, ANALYZER_KEYS, required=("waveforms",))
    for key, spec in (
        ("sparsity", SPARSITY_KEYS),
        ("random_spikes", RANDOM_SPIKES_KEYS),
        ("waveforms", WAVEFORMS_KEYS),
        ("noise_levels", NOISE_LEVELS_KEYS),
    ):
        _check_map(src, f"analyzer.{key}", analyzer.get(key) or {}, spec)
    extensions = data.get("extensions") or {}
    _check_map(src, "extensions", extensions, {name: "m?" for name in EXTENSIONS})
    for name, params in extensions.items():
        _check_map(src, f"extensions.{name}", params or {}, EXTENSIONS[name][0])
    _check_metrics(src, data["quality_metrics"], set(extensions))
    if data.get("by_hypnogram_state") is not None:
        _check_states(src, data["by_hypnogram_state"], data["quality_metrics"]["metric_names"])
    _check_curation(src, data.get("curation") or {}, data["quality_metrics"]["metric_names"])
    _check_map(src, "plots", data.get("plots") or {}, PLOTS_KEYS)
    return data


def _check_metrics(src: str, block: Any, extensions: set[str]) -> None:
    _check_map(src, "quality_metrics", block, METRICS_KEYS, required=("metric_names",))
    names = block["metric_names"]
    for i, name in enumerate(names):
        if name not in QUALITY_METRICS:
            _fail(
                src,
                f"quality_metrics.metric_names[{i}]",
                f"unknown metric {name!r}; allowed: {', '.join(QUALITY_METRICS)}",
            )
        missing = [ext for ext in QUALITY_METRICS[name][2] if ext not in extensions]
        if missing:
            _fail(src, f"quality_metrics.metric_names[{i}]", f"{name} needs extensions.{missing[0]}; add it")
    params = block.get("metric_params") or {}
    _check_map(src, "quality_metrics.metric_params", params, {name: "m" for name in names})
    for name, value in params.items():
        _check_map(src, f"quality_metrics.metric_params.{name}", value, QUALITY_METRICS[name][0])


def _check_states(src: str, block: Any, metric_names: list[str]) -> None:
    _check_map(src, "by_hypnogram_state", block, STATE_KEYS, required=("states",))
    state_map = {**STATE_MAP, **(block.get("state_map") or {})}
    for i, state in enumerate(block["states"]):
        if state not in set(state_map.values()):
            _fail(
                src,
                f"by_hypnogram_state.states[{i}]",
                f"unknown state {state!r}; known: {', '.join(sorted(set(state_map.values())))}",
            )
    for i, name in enumerate(block.get("metric_names") or []):
        if name not in metric_names:
            _fail(
                src,
                f"by_hypnogram_state.metric_names[{i}]",
                f"{name!r} is not in quality_metrics.metric_names",
            )
        if not QUALITY_METRICS[name][3]:
            _fail(
                src,
                f"by_hypnogram_state.metric_names[{i}]",
                f"{name} has no per-period support in SpikeInterface 0.105",
            )


def state_metric_names(opts: dict) -> list[str]:
    """The metrics computed per state: the block's list, else every configured one with periods."""
    block = opts.get("by_hypnogram_state") or {}
    names = block.get("metric_names") or opts["quality_metrics"]["metric_names"]
    return [name for name in names if QUALITY_METRICS[name][3]]


def metric_columns(names: list[str]) -> list[str]:
    return [column for name in names for column in QUALITY_METRICS[name][1]]


def _check_curation(src: str, block: Any, metric_names: list[str]) -> None:
    _check_map(src, "curation", block, CURATION_KEYS)
    auto = block.get("auto_label")
    if auto is None:
        return
    _check_map(src, "curation.auto_label", auto, AUTO_LABEL_KEYS, required=("label", "otherwise", "rules"))
    for key in ("label", "otherwise"):
        if auto[key] not in PHY_GROUPS:
            _fail(
                src,
                f"curation.auto_label.{key}",
                f"{auto[key]!r} is not a phy group ({', '.join(PHY_GROUPS)})",
            )
    columns = metric_columns(metric_names)
    for column, rule in auto["rules"].items():
        if column not in columns:
            _fail(
                src,
                _join("curation.auto_label.rules", column),
                f"not a column of the configured metrics ({', '.join(columns)})",
            )
        _check_map(src, f"curation.auto_label.rules.{column}", rule, RULE_KEYS)
