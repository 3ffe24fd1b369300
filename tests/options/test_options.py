"""Tests for tasks.options.sorting: shipped files, old-format translation, strict schema, SpikeInterface
drift."""

from __future__ import annotations

import copy
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.core.errors import UserError
from tasks.options import sorting as O

ROOT = Path(__file__).resolve().parents[2]
OPTS = ROOT / "opts"
OLD = Path(__file__).parents[1] / "data" / "old_opts"
DRIFT = 3  # index of drift_correction in the lab's chain


def chronic() -> dict:
    return yaml.safe_load((OPTS / "sorting_chronic_df.yaml").read_text())


def load_error(tmp_path: Path, data: dict | str) -> str:
    """Write `data`, load it, return the UserError message (fails the test when nothing is raised)."""
    path = tmp_path / "opts.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(UserError) as info:
        O.load_sorting_options(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


# --- shipped files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sorting_chronic_df", "sorting_acute_df", "sorting_demo"])
def test_shipped_files_load_without_translation(name: str) -> None:
    opts = O.load_sorting_options(OPTS / f"{name}.yaml")
    assert opts.translations == []
    assert opts.source == OPTS / f"{name}.yaml"
    assert opts.data == yaml.safe_load((OPTS / f"{name}.yaml").read_text())
    assert O.drift_params(opts.data)["detect_kwargs"]["detect_threshold"] == 5.0


def test_lab_defaults_match_spec() -> None:
    data = O.load_sorting_options(OPTS / "sorting_chronic_df.yaml").data
    names = [s["step_name"] for s in O.chain_steps(data)]
    assert names == [
        "bandpass_filter",
        "phase_shift",
        "common_reference",
        "drift_correction",
        "whiten",
        "scale",
    ]
    drift = O.drift_params(data)
    assert drift["estimate_motion_kwargs"]["bin_s"] == 60.0
    assert drift["estimate_motion_kwargs"]["win_scale_um"] == 1500.0
    assert drift["localize_peaks_kwargs"]["method"] == "monopolar_triangulation"
    assert data["preprocessing"][5]["step_params"]["gain"] == data["sorting"]["sorter_params"]["scaleproc"]
    acute = O.load_sorting_options(OPTS / "sorting_acute_df.yaml").data
    assert O.diff_options(data, acute) == [
        f"preprocessing[{DRIFT}].step_params.estimate_motion_kwargs.bin_s",
        f"preprocessing[{DRIFT}].step_params.clean_motion_kwargs.sigma_smooth_s",
    ]


def test_demo_is_cpu_only() -> None:
    data = O.load_sorting_options(OPTS / "sorting_demo.yaml").data
    names = [s["step_name"] for s in O.chain_steps(data)]
    assert names == ["bandpass_filter", "phase_shift", "common_reference", "drift_correction"]
    drift = O.drift_params(data)
    assert drift["localize_peaks_kwargs"]["method"] == "grid_convolution"
    assert drift["estimate_motion_kwargs"]["conv_engine"] == "numpy"
    # Fit to the demo's 60 s zigzag (the chronic defaults' 10 s would halve it): README, the demo's note.
    assert (drift["estimate_motion_kwargs"]["bin_s"], drift["clean_motion_kwargs"]["sigma_smooth_s"]) == (
        5.0,
        2.0,
    )
    # Fit to the demo world too: tridesclous2's default threshold made ~200 clusters of noise there.
    params = {"detect_threshold": 6.5, "min_firing_rate": 0.5}
    assert data["sorting"] == {"sorter_name": "tridesclous2", "sorter_params": params}


# --- old format ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["chronic", "acute"])
def test_old_format_translates_to_the_new_defaults(kind: str) -> None:
    old = O.load_sorting_options(OLD / f"sorting_{kind}_old.yaml")
    new = O.load_sorting_options(OPTS / f"sorting_{kind}_df.yaml")
    # Everything but the (kept, ignored) sorter_path says the same as the shipped new-format file.
    # The new files also fix the whitening seed (the old fork drew random chunks on every run) and set
    # Kilosort v2.5.2's batch NT = 64*1024 - ntbuff (the fix for spike holes at batch edges), and compute the
    # chain with the torch engine (an old file, without the key, keeps SpikeInterface's chain).
    assert O.diff_options(old.data, new.data) == [
        "preprocessing[4].step_params.seed",
        "sorting.sorter_path",
        "sorting.sorter_params.NT",
        "engine",
    ]
    assert "engine" not in old.data and new.data["engine"] == "torch"
    assert "drift_correction.motion_params.bin_duration_s -> estimate_motion_kwargs.bin_s" in old.translations
    assert (
        "drift_correction.motion_params.win_sigma_um -> estimate_motion_kwargs.win_scale_um"
        in old.translations
    )
    assert "sorting.sorter_path ignored: the image provides the sorter" in old.translations
    estimate = O.drift_params(old.data)["estimate_motion_kwargs"]
    assert list(estimate)[:3] == ["method", "bin_s", "bin_um"]
    assert "margin_um" not in estimate and estimate["hist_margin_um"] == estimate["win_margin_um"] == 0.0


def test_old_format_refuses_what_it_cannot_translate(tmp_path: Path) -> None:
    old = yaml.safe_load((OLD / "sorting_chronic_old.yaml").read_text())
    bad = copy.deepcopy(old)
    bad["preprocessing"][DRIFT]["step_params"]["extract_waveforms_params"]["ms_after"] = 1.0
    assert "preprocessing[3].drift_correction.extract_waveforms_params" in load_error(tmp_path, bad)
    mixed = copy.deepcopy(old)
    mixed["preprocessing"][DRIFT]["step_params"]["detect_kwargs"] = {"method": "by_channel"}
    assert "preprocessing[3].drift_correction.detect_kwargs: given in both" in load_error(tmp_path, mixed)
    typo = copy.deepcopy(old)
    typo["preprocessing"][DRIFT]["step_params"]["motion_params"]["bin_duration_sec"] = 5.0
    message = load_error(tmp_path, typo)
    assert "preprocessing[3].drift_correction.estimate_motion_kwargs.bin_duration_sec: unknown key" in message


# --- strict schema ---------------------------------------------------------------------------------------


def test_unknown_keys_at_every_depth(tmp_path: Path) -> None:
    data = chronic()
    data["sortng"] = {}
    assert load_error(tmp_path, data).endswith("sortng: unknown key; did you mean sorting?")
    data = chronic()
    data["preprocessing"][0]["step_parms"] = {}
    assert "preprocessing[0].step_parms: unknown key; did you mean step_params?" in load_error(tmp_path, data)
    data = chronic()
    data["sorting"]["sorter_params"]["scaleprc"] = 200
    assert "sorting.sorter_params.scaleprc: unknown key; did you mean scaleproc?" in load_error(
        tmp_path, data
    )
    data = chronic()
    data["preprocessing"][DRIFT]["step_params"]["estimate_motion_kwargs"]["bin_sec"] = 60.0
    message = load_error(tmp_path, data)
    assert (
        "preprocessing[3].drift_correction.estimate_motion_kwargs.bin_sec: unknown key; did you mean bin_s?"
        in (message)
    )


def test_old_key_in_new_format_hints_the_rename(tmp_path: Path) -> None:
    data = chronic()
    data["preprocessing"][DRIFT]["step_params"]["estimate_motion_kwargs"]["win_sigma_um"] = 1.0
    assert "win_sigma_um: unknown key; renamed to win_scale_um" in load_error(tmp_path, data)


def test_keys_are_checked_per_method(tmp_path: Path) -> None:
    data = chronic()
    localize = data["preprocessing"][DRIFT]["step_params"]["localize_peaks_kwargs"]
    localize["method"] = "grid_convolution"  # monopolar's max_distance_um etc. are not grid's
    message = load_error(tmp_path, data)
    assert "localize_peaks_kwargs.max_distance_um: unknown key" in message
    data = chronic()
    data["preprocessing"][DRIFT]["step_params"]["estimate_motion_kwargs"]["method"] = "dredge"
    assert "estimate_motion_kwargs.method: unknown method 'dredge'; allowed: decentralized" in (
        load_error(tmp_path, data)
    )


def test_preset_supplies_methods(tmp_path: Path) -> None:
    data = chronic()
    drift = data["preprocessing"][DRIFT]["step_params"]
    drift["preset"] = "dredge_fast"
    drift["detect_kwargs"].pop("method")
    drift["localize_peaks_kwargs"] = {"radius_um": 40.0}
    drift["estimate_motion_kwargs"] = {"batching_mode": "full", "bin_s": 2.0}
    O.parse_sorting_options(data, "opts.yaml")  # dredge_fast: grid_convolution + dredge_ap accept these
    drift["estimate_motion_kwargs"]["corr_threshold"] = 0.7  # decentralized only
    with pytest.raises(UserError, match=r"estimate_motion_kwargs\.corr_threshold: unknown key"):
        O.parse_sorting_options(data, "opts.yaml")
    drift["preset"] = None
    with pytest.raises(UserError, match=r"detect_kwargs\.method: required when no preset"):
        O.parse_sorting_options(data, "opts.yaml")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("detect_threshold", "5", "detect_kwargs.detect_threshold: expected a number, got a string ('5')"),
        (
            "detect_threshold",
            True,
            "detect_kwargs.detect_threshold: expected a number, got true/false (True)",
        ),
        ("peak_sign", 1, "detect_kwargs.peak_sign: expected a string, got a number (1)"),
        ("radius_um", None, "detect_kwargs.radius_um: expected a number, got null"),
    ],
)
def test_wrong_types(tmp_path: Path, key: str, value: object, expected: str) -> None:
    data = chronic()
    data["preprocessing"][DRIFT]["step_params"]["detect_kwargs"][key] = value
    assert f"preprocessing[3].drift_correction.{expected}" in load_error(tmp_path, data)


def test_types_of_containers_and_nullables(tmp_path: Path) -> None:
    data = chronic()
    data["preprocessing"][DRIFT]["step_params"]["estimate_motion_kwargs"]["time_horizon_s"] = 360.0
    O.parse_sorting_options(data, "opts.yaml")  # number or null
    data["preprocessing"][0]["step_params"] = [300.0, 12000.0]
    assert "preprocessing[0].step_params: expected a mapping, got a list" in load_error(tmp_path, data)
    data = chronic()
    data["sorting"]["sorter_params"]["projection_threshold"] = 10
    assert "sorting.sorter_params.projection_threshold: expected a list" in load_error(tmp_path, data)
    data = chronic()
    data["sorting"]["sorter_params"]["scaleproc"] = None
    data["preprocessing"][5]["step_params"]["gain"] = 100.0
    O.parse_sorting_options(data, "opts.yaml")  # no scaleproc: nothing to compare the gain with


def test_unknown_step_and_repeated_steps(tmp_path: Path) -> None:
    data = chronic()
    data["preprocessing"][1]["step_name"] = "phase_shfit"
    message = load_error(tmp_path, data)
    assert "preprocessing[1].step_name: unknown step 'phase_shfit'; allowed steps: bandpass_filter" in message
    assert "drift_correction" in message and "whiten" in message
    data = chronic()
    data["preprocessing"].append(copy.deepcopy(data["preprocessing"][4]))
    assert "preprocessing[6].step_name: whiten may appear only once" in load_error(tmp_path, data)


def test_unknown_preset_lists_presets(tmp_path: Path) -> None:
    data = chronic()
    data["preprocessing"][DRIFT]["step_params"]["preset"] = "dredge_fastest"
    message = load_error(tmp_path, data)
    assert "preprocessing[3].drift_correction.preset: unknown preset 'dredge_fastest'" in message
    assert all(preset in message for preset in O.PRESETS)


def test_scale_gain_must_equal_kilosort_scaleproc(tmp_path: Path) -> None:
    data = chronic()
    data["preprocessing"][5]["step_params"]["gain"] = 100.0
    message = load_error(tmp_path, data)
    assert "preprocessing[5].scale.gain" in message and "sorting.sorter_params.scaleproc" in message
    data = chronic()
    del data["preprocessing"][5]
    assert "preprocessing[4].whiten: whiten without a scale step" in load_error(tmp_path, data)
    data["sorting"] = {"sorter_name": "tridesclous2", "sorter_params": {}}
    O.parse_sorting_options(data, "opts.yaml")  # the rule is Kilosort 2.5's only


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    text = (OPTS / "sorting_demo.yaml").read_text().splitlines()
    line = next(i for i, t in enumerate(text) if "freq_max" in t)
    text[line] = "    freq_max: [12000.0"  # unclosed flow sequence, wrongly indented
    message = load_error(tmp_path, "\n".join(text))
    assert "malformed YAML at line" in message
    number = int(message.split("line ")[1].split(":")[0])
    assert line + 1 <= number <= line + 3


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    text = (
        (OPTS / "sorting_demo.yaml")
        .read_text()
        .replace("freq_max: 12000.0", "freq_max: 12000.0\n      freq_max: 6000.0")
    )
    assert "duplicate key 'freq_max'" in load_error(tmp_path, text)


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read the options file"):
        O.load_sorting_options(tmp_path / "nope.yaml")
    assert "expected a mapping" in load_error(tmp_path, "- just\n- a list\n")


# --- helpers ---------------------------------------------------------------------------------------------


def test_diff_and_dump() -> None:
    a = chronic()
    b = copy.deepcopy(a)
    assert O.diff_options(a, b) == []
    b["sorting"]["sorter_params"]["car"] = 1  # equal to True in Python, not in options
    b["sorting"]["sorter_params"]["lam"] = 10.0
    del b["preprocessing"][DRIFT]["step_params"]["preset"]
    assert O.diff_options(a, b) == [
        f"preprocessing[{DRIFT}].step_params.preset",
        "sorting.sorter_params.car",
        "sorting.sorter_params.lam",
    ]
    b["preprocessing"].pop()
    assert O.diff_options(a, b)[0] == "preprocessing"
    text = O.dump_options(a)
    assert yaml.safe_load(text) == a
    assert list(yaml.safe_load(text)) == ["engine", "preprocessing", "sorting"]
    assert O.drift_params({"preprocessing": [{"step_name": "whiten"}], "sorting": {}}) is None


def test_imports_without_spikeinterface() -> None:
    code = "import sys; sys.modules['spikeinterface'] = None; import tasks.options.sorting"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- the schema against the installed SpikeInterface -----------------------------------------------------


def _params(func) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(func).parameters)


def _assert_accepted(spec: dict[str, str], params: dict[str, inspect.Parameter], where: str) -> None:
    for key, code in spec.items():
        assert key in params, f"{where}: schema allows {key!r}, SpikeInterface does not take it"
        default = params[key].default
        if default is not inspect.Parameter.empty and default is not None:
            default = list(default) if isinstance(default, tuple) else default
            assert O._type_ok(default, code), f"{where}.{key}: default {default!r} is not of type {code}"


def test_motion_schema_matches_spikeinterface() -> None:
    pytest.importorskip("spikeinterface")
    from spikeinterface.preprocessing.motion import get_motion_presets, motion_options_preset
    from spikeinterface.sortingcomponents.motion import clean_motion_vector, interpolate_motion
    from spikeinterface.sortingcomponents.motion.dredge import dredge_ap, dredge_online_lfp
    from spikeinterface.sortingcomponents.motion.motion_estimation import (
        estimate_motion,
        estimate_motion_methods,
    )
    from spikeinterface.sortingcomponents.peak_detection import detect_peak_methods
    from spikeinterface.sortingcomponents.peak_localization import peak_localization_methods

    assert set(O.PRESETS) == set(get_motion_presets())
    for preset, methods in O.PRESET_METHODS.items():
        p = motion_options_preset[preset]
        assert methods == tuple(
            p[k]["method"] for k in ("detect_kwargs", "localize_peaks_kwargs", "estimate_motion_kwargs")
        )
    assert set(O.DETECT_KWARGS) == set(detect_peak_methods)
    for method, spec in O.DETECT_KWARGS.items():
        _assert_accepted(spec, _params(detect_peak_methods[method].__init__), f"detect {method}")
    assert set(O.LOCALIZE_KWARGS) == set(peak_localization_methods)
    for method, spec in O.LOCALIZE_KWARGS.items():
        _assert_accepted(spec, _params(peak_localization_methods[method].__init__), f"localize {method}")
    _assert_accepted(O.ESTIMATE_COMMON, _params(estimate_motion), "estimate_motion")
    assert set(O.ESTIMATE_KWARGS) == set(estimate_motion_methods)
    # dredge's run() forwards **method_kwargs to these functions; the others take them in run().
    targets = {"dredge_ap": dredge_ap, "dredge_lfp": dredge_online_lfp}
    for method, spec in O.ESTIMATE_KWARGS.items():
        target = targets.get(method, estimate_motion_methods[method].run)
        _assert_accepted(spec, _params(target), f"estimate {method}")
    _assert_accepted(O.CLEAN_KWARGS, _params(clean_motion_vector), "clean_motion_vector")
    _assert_accepted(O.INTERPOLATE_KWARGS, _params(interpolate_motion), "interpolate_motion")


def test_step_schema_matches_spikeinterface() -> None:
    pytest.importorskip("spikeinterface")
    import spikeinterface.preprocessing as spre
    from spikeinterface.core.time_series_tools import get_random_sample_slices
    from spikeinterface.preprocessing.filter import FilterRecording

    extra = {  # where each function's **kwargs go
        "bandpass_filter": _params(FilterRecording.__init__),
        "highpass_filter": _params(FilterRecording.__init__),
        "whiten": _params(get_random_sample_slices),
    }
    for step, spec in O.STEP_PARAMS.items():
        if step != "drift_correction":
            params = {**extra.get(step, {}), **_params(getattr(spre, step))}
            _assert_accepted(spec, params, step)


@pytest.mark.filterwarnings("ignore:Kilosort4 is not installed")
@pytest.mark.parametrize("sorter", sorted(O.SORTER_PARAMS))
def test_sorter_schema_matches_spikeinterface(sorter: str) -> None:
    pytest.importorskip("spikeinterface")
    from spikeinterface.sorters import get_default_sorter_params, sorter_dict

    defaults = get_default_sorter_params(sorter)
    spec = O.SORTER_PARAMS[sorter]
    if sorter == "kilosort4" and not sorter_dict[sorter].is_installed():
        # Without kilosort, SpikeInterface lists none of kilosort4's params: check its own ones.
        own = sorter_dict[sorter]._si_default_params
        assert set(own) <= set(spec)
        defaults = dict(own)
    else:  # kilosort4 with kilosort installed: its own keys too (the [ks4] extra pins the version)
        assert set(spec) == set(defaults), set(spec) ^ set(defaults)
    for key, value in defaults.items():
        value = list(value) if isinstance(value, tuple) else value
        assert O._type_ok(value, spec[key]), f"{sorter}.{key}: default {value!r} is not of type {spec[key]}"
