"""Postprocessing options: the lab's files load, typos name the key, names match installed SpikeInterface."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from tasks.core.errors import UserError
from tasks.options.postpro import (
    EXTENSIONS,
    QUALITY_METRICS,
    load_postpro_options,
    parse_postpro_options,
    state_metric_names,
)

OPTS = Path(__file__).resolve().parents[2] / "opts"


def chronic() -> dict:
    return yaml.safe_load((OPTS / "postpro_chronic_df.yaml").read_text())


@pytest.mark.parametrize("name", ["postpro_chronic_df", "postpro_acute_df", "postpro_demo"])
def test_option_files_load(name):
    opts = load_postpro_options(OPTS / f"{name}.yaml")
    assert ("by_hypnogram_state" in opts) == (name != "postpro_acute_df")


def test_chronic_defaults_are_the_labs():
    opts = load_postpro_options(OPTS / "postpro_chronic_df.yaml")
    assert opts["analyzer"]["waveforms"] == {"ms_before": 1.0, "ms_after": 1.5}
    assert opts["analyzer"]["random_spikes"]["max_spikes_per_unit"] == 500
    assert opts["extensions"]["principal_components"] == {"n_components": 5, "mode": "by_channel_local"}
    assert opts["quality_metrics"]["metric_params"]["nn_advanced"] == {
        "max_spikes": 400,
        "min_fr": 0.1,
        "n_components": 5,
    }
    assert opts["by_hypnogram_state"]["states"] == ["NREM", "Wake", "REM"]
    assert "snr" not in state_metric_names(opts) and "firing_rate" in state_metric_names(opts)


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda o: o["analyzer"]["waveforms"].update(ms_befor=1.0),
            r"analyzer.waveforms.ms_befor: unknown key; did you mean ms_before",
        ),
        (
            lambda o: o["quality_metrics"]["metric_names"].append("isi_violations"),
            r"metric_names\[10\]: unknown metric 'isi_violations'",
        ),
        (
            lambda o: o["quality_metrics"]["metric_params"].update(drift={"interval": 3}),
            r"metric_params.drift.interval: unknown key",
        ),
        (lambda o: o["extensions"].update(waveform_pca={}), r"extensions.waveform_pca: unknown key"),
        (
            lambda o: o["extensions"].pop("principal_components"),
            r"nn_advanced needs extensions.principal_components",
        ),
        (
            lambda o: o["by_hypnogram_state"].update(states=["SWS"]),
            r"by_hypnogram_state.states\[0\]: unknown state 'SWS'",
        ),
        (lambda o: o.update(hyp={"states": ["REM"]}), r"hyp: give either hyp .* or by_hypnogram_state"),
        (
            lambda o: o.update(curation={"auto_label": {"label": "great", "otherwise": "mua", "rules": {}}}),
            r"curation.auto_label.label: 'great' is not a phy group",
        ),
        (
            lambda o: o.update(
                curation={
                    "auto_label": {
                        "label": "good",
                        "otherwise": "mua",
                        "rules": {"isi_violation": {"max": 1}},
                    }
                }
            ),
            r"rules.isi_violation: not a column",
        ),
    ],
)
def test_typos_and_bad_values_name_the_key(edit, match):
    opts = chronic()
    edit(opts)
    with pytest.raises(UserError, match=match):
        parse_postpro_options(opts, "p.yaml")


def test_howto_hyp_spelling_is_accepted():
    opts = chronic()
    opts["hyp"] = opts.pop("by_hypnogram_state")
    assert parse_postpro_options(opts, "p.yaml")["by_hypnogram_state"]["states"] == ["NREM", "Wake", "REM"]


def test_names_match_installed_spikeinterface():
    from spikeinterface.core.sortinganalyzer import get_extension_class
    from spikeinterface.metrics import get_default_quality_metrics_params
    from spikeinterface.metrics.quality.quality_metrics import ComputeQualityMetrics

    metrics = {m.metric_name: m for m in ComputeQualityMetrics.metric_list}
    defaults = get_default_quality_metrics_params()
    for name, (params, columns, needs, periods) in QUALITY_METRICS.items():
        metric = metrics[name]
        assert tuple(metric.metric_columns) == columns, name
        assert metric.supports_periods == periods, name
        known = set(inspect.signature(metric.metric_function).parameters) | set(defaults.get(name, {}))
        assert set(params) <= known, name
        assert all(any(ext in dep for dep in metric.depend_on) for ext in needs) or name == "snr", name
    for name, (params, _) in EXTENSIONS.items():
        signature = inspect.signature(get_extension_class(name)._set_params).parameters
        method_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.values())
        assert set(params) <= set(signature) or method_kwargs, name
