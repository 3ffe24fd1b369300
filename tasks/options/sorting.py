"""Sorting options (opts.yaml): load, translate the lab's old format, validate against a strict schema."""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from tasks.core.errors import UserError
from tasks.options.sorting_schema import (  # noqa: F401  (re-exported: the schema is part of this API)
    _DETECT,
    _DREDGE,
    _FILTER,
    _JOB,
    _OLD_DRIFT_KEYS,
    _TDC,
    _TYPE_NAMES,
    ARTIFACT_KEYS,
    CLEAN_KWARGS,
    DETECT_KWARGS,
    DRIFT_PARAMS,
    ENGINES,
    ESTIMATE_COMMON,
    ESTIMATE_KWARGS,
    INTERPOLATE_KWARGS,
    LOCALIZE_KWARGS,
    NWB_KEYS,
    OLD_INTERPOLATION,
    OLD_WAVEFORMS,
    ONCE_STEPS,
    PRESET_METHODS,
    PRESETS,
    RENAMED,
    SORTER_PARAMS,
    SORTING_KEYS,
    STEP_KEYS,
    STEP_PARAMS,
    TOP_KEYS,
    _spec,
)


@dataclass
class SortingOptions:
    data: dict  # the normalized new-format dict (no defaults filled in)
    source: Path
    translations: list[str] = field(default_factory=list)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_sorting_options(path: Path) -> SortingOptions:
    """Read, translate and validate an options file; UserError on anything wrong."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise UserError(f"{path}: cannot read the options file ({err.strerror}); check --opts") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "unknown line"
        problem = getattr(err, "problem", None) or str(err)
        raise UserError(f"{path}: malformed YAML at {where}: {problem}") from None
    return parse_sorting_options(data, str(path))


def parse_sorting_options(data: Any, source: str) -> SortingOptions:
    """Translate (old format) and validate already-loaded YAML."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping with 'preprocessing' and 'sorting', got {_got(data)}")
    data, notes = _translate(copy.deepcopy(data), source)
    _validate(data, source)
    return SortingOptions(data=data, source=Path(source), translations=notes)


def chain_steps(opts: dict) -> list[dict]:
    """The preprocessing chain as [{'step_name', 'step_params'}] in run order (params {} when absent)."""
    return [
        {"step_name": s["step_name"], "step_params": dict(s.get("step_params") or {})}
        for s in opts["preprocessing"]
    ]


def drift_params(opts: dict) -> dict | None:
    """The drift_correction step's params, or None when the chain has no drift correction."""
    for step in chain_steps(opts):
        if step["step_name"] == "drift_correction":
            return step["step_params"]
    return None


def diff_options(a: Any, b: Any, _path: str = "") -> list[str]:
    """Dotted paths (lists indexed as [i]) where two option trees differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in [*a, *(k for k in b if k not in a)]:
            sub = _join(_path, key)
            out += diff_options(a[key], b[key], sub) if key in a and key in b else [sub]
        return out
    if (
        isinstance(a, list)
        and isinstance(b, list)
        and len(a) == len(b)
        and any(isinstance(x, dict) for x in a)
    ):
        pairs = enumerate(zip(a, b, strict=True))  # lists of steps: compare step by step
        return [p for i, (x, y) in pairs for p in diff_options(x, y, f"{_path}[{i}]")]
    same = a == b and isinstance(a, bool) == isinstance(b, bool)  # true != 1 in options
    return [] if same else [_path or "<root>"]


def dump_options(opts: dict) -> str:
    """YAML text of an options dict, key order kept."""
    return yaml.safe_dump(opts, sort_keys=False, default_flow_style=False, width=110)


# --- old format -> new format ---------------------------------------------------------------------------


def _translate(data: dict, src: str) -> tuple[dict, list[str]]:
    notes: list[str] = []
    steps = data.get("preprocessing")
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        if isinstance(step, dict) and step.get("step_name") == "drift_correction":
            params = step.get("step_params")
            if isinstance(params, dict) and any(k in params for k in _OLD_DRIFT_KEYS.split()):
                step["step_params"] = _translate_drift(
                    params, src, f"preprocessing[{i}].drift_correction", notes
                )
    sorting = data.get("sorting")
    if isinstance(sorting, dict) and "sorter_path" in sorting:
        notes.append("sorting.sorter_path ignored: the image provides the sorter")
    return data, notes


def _translate_drift(old: dict, src: str, path: str, notes: list[str]) -> dict:
    def take(key: str) -> dict:
        value = old.pop(key, None)
        if not isinstance(value, dict | None):
            _fail(src, _join(path, key), f"expected a mapping, got {_got(value)}")
        return value or {}

    def note(text: str) -> None:
        notes.append(f"drift_correction.{text}")

    new: dict = {"preset": None}  # the old format had no presets
    # Dropped groups: allowed only with the values 0.105 uses anyway.
    for key, fixed, why in [
        ("noise_level_params", {}, "SpikeInterface 0.105 computes noise levels itself"),
        ("extract_waveforms_params", OLD_WAVEFORMS, "0.105 uses ms_before 0.1, ms_after 0.3"),
    ]:
        if key in old:
            if take(key) not in ({}, fixed):
                _fail(
                    src,
                    f"{path}.{key}",
                    f"SpikeInterface 0.105 has no such setting (it uses {fixed}); remove it",
                )
            note(f"{key} dropped: {why}")
    if "peak_detection_params" in old:
        new["detect_kwargs"] = take("peak_detection_params")
        note("peak_detection_params -> detect_kwargs")
    if "peak_localization_method" in old or "peak_localization_params" in old:
        method = old.pop("peak_localization_method", None)
        new["localize_peaks_kwargs"] = {"method": method, **take("peak_localization_params")}
        note("peak_localization_method + peak_localization_params -> localize_peaks_kwargs")
    if "motion_params" in old or "motion_method_params" in old:
        general, specific = take("motion_params"), take("motion_method_params")
        estimate = {"method": specific.pop("method")} if "method" in specific else {}
        for group, params in (("motion_params", general), ("motion_method_params", specific)):
            for key, value in params.items():
                estimate.update(dict.fromkeys(RENAMED.get(key, (key,)), value))
                if key in RENAMED:
                    note(
                        f"{group}.{key} -> "
                        + " and ".join(f"estimate_motion_kwargs.{k}" for k in RENAMED[key])
                    )
        new["estimate_motion_kwargs"] = estimate
        note("motion_params + motion_method_params -> estimate_motion_kwargs")
    if "clean_motion_params" in old:
        new["clean_motion_kwargs"] = take("clean_motion_params")
        note("clean_motion_params -> clean_motion_kwargs")
    if "interpolate_motion_kwargs" not in old:
        new["interpolate_motion_kwargs"] = dict(OLD_INTERPOLATION)
        note("interpolate_motion_kwargs added: the old fork's fixed interpolation values")
    for key, value in old.items():  # new-format or unknown keys left over: validation judges them
        if key in new and key != "preset":
            _fail(src, _join(path, key), "given in both the old and the new format; keep the new one only")
        new[key] = value
    return new


# --- validation -------------------------------------------------------------------------------------------


def _validate(data: dict, src: str) -> None:
    _check_map(src, "", data, TOP_KEYS, required=("preprocessing", "sorting"))
    if data.get("engine", "spikeinterface") not in ENGINES:
        _fail(src, "engine", f"{data['engine']!r} is not an engine; use one of {', '.join(ENGINES)}")
    counts: dict[str, int] = {}
    for i, step in enumerate(data["preprocessing"]):
        path = f"preprocessing[{i}]"
        if not isinstance(step, dict):
            _fail(src, path, f"expected a mapping with step_name and step_params, got {_got(step)}")
        _check_map(src, path, step, STEP_KEYS, required=("step_name",))
        name = step["step_name"]
        if name not in STEP_PARAMS:
            _fail(src, f"{path}.step_name", f"unknown step {name!r}; allowed steps: {', '.join(STEP_PARAMS)}")
        counts[name] = counts.get(name, 0) + 1
        if name in ONCE_STEPS and counts[name] > 1:
            _fail(src, f"{path}.step_name", f"{name} may appear only once in the chain")
        params = step.get("step_params") or {}
        _check_map(src, f"preprocessing[{i}].{name}", params, STEP_PARAMS[name])
        if name == "drift_correction":
            _check_drift(src, f"preprocessing[{i}].{name}", params)
    sorting = data["sorting"]
    _check_map(src, "sorting", sorting, SORTING_KEYS, required=("sorter_name",))
    sorter = sorting["sorter_name"]
    if sorter in SORTER_PARAMS:
        _check_map(src, "sorting.sorter_params", sorting.get("sorter_params") or {}, SORTER_PARAMS[sorter])
    _check_sorter_scaling(data, src)
    _check_map(src, "artifacts", data.get("artifacts") or {}, ARTIFACT_KEYS)
    for key, value in (data.get("artifacts") or {}).items():
        if value <= 0 or (key.endswith("fraction") and value > 1):
            _fail(
                src, f"artifacts.{key}", f"{value} must be > 0" + (" and <= 1" if "fraction" in key else "")
            )
    _check_map(src, "nwb", data.get("nwb") or {}, NWB_KEYS)


def _check_drift(src: str, path: str, params: dict) -> None:
    preset = params.get("preset")
    if preset is not None and preset not in PRESETS:
        _fail(src, f"{path}.preset", f"unknown preset {preset!r}; presets: {', '.join(PRESETS)} (or null)")
    stages = (
        ("detect_kwargs", DETECT_KWARGS, {}),
        ("localize_peaks_kwargs", LOCALIZE_KWARGS, {}),
        ("estimate_motion_kwargs", ESTIMATE_KWARGS, ESTIMATE_COMMON),
    )
    for index, (key, methods, common) in enumerate(stages):
        kwargs = params.get(key) or {}
        method = kwargs.get("method", PRESET_METHODS[preset][index] if preset else None)
        sub = f"{path}.{key}.method"
        if method is None:
            _fail(src, sub, "required when no preset is given")
        if not isinstance(method, str) or method not in methods:
            _fail(src, sub, f"unknown method {method!r}; allowed: {', '.join(methods)}")
        _check_map(src, f"{path}.{key}", kwargs, {"method": "s", **common, **methods[method]}, method=method)
    for key, spec in (
        ("clean_motion_kwargs", CLEAN_KWARGS),
        ("interpolate_motion_kwargs", INTERPOLATE_KWARGS),
    ):
        _check_map(src, f"{path}.{key}", params.get(key) or {}, spec)


def _check_sorter_scaling(data: dict, src: str) -> None:
    """Kilosort expects int16-range data: whitened data must be scaled, by exactly its `scaleproc`."""
    sorting = data["sorting"]
    sorter, sorter_params = sorting["sorter_name"], sorting.get("sorter_params") or {}
    steps = {s["step_name"]: (i, s.get("step_params") or {}) for i, s in enumerate(data["preprocessing"])}
    if sorter == "kilosort2_5" and "whiten" in steps and "scale" not in steps:
        why = "kilosort2_5 needs int16-range data: add a scale step, gain = sorting.sorter_params.scaleproc"
        _fail(src, f"preprocessing[{steps['whiten'][0]}].whiten", f"whiten without a scale step; {why}")
    if sorter.startswith("kilosort") and "scale" in steps and sorter_params.get("scaleproc") is not None:
        index, scale = steps["scale"]
        gain, scaleproc = scale.get("gain", 1.0), sorter_params["scaleproc"]
        if float(gain) != float(scaleproc):
            why = "they must be equal (Kilosort undoes the scaling with scaleproc)"
            message = f"{gain} differs from sorting.sorter_params.scaleproc {scaleproc}; {why}"
            _fail(src, f"preprocessing[{index}].scale.gain", message)


def _check_map(
    src: str, path: str, value: Any, spec: dict[str, str], required: tuple = (), method: str = ""
) -> None:
    if not isinstance(value, dict):
        _fail(src, path or "<top level>", f"expected a mapping, got {_got(value)}")
    for key in required:
        if key not in value:
            _fail(src, _join(path, key), "missing required key")
    for key, item in value.items():
        if not isinstance(key, str) or key not in spec:
            _fail(src, _join(path, str(key)), "unknown key" + _hint(str(key), spec, method))
        code = spec[key]
        if not _type_ok(item, code):
            null = " or null" if code.endswith("?") else ""
            _fail(src, _join(path, key), f"expected {_TYPE_NAMES[code[0]]}{null}, got {_got(item)}")


def _hint(key: str, spec: dict[str, str], method: str) -> str:
    if key in RENAMED and RENAMED[key][0] in spec:
        return f"; renamed to {' and '.join(RENAMED[key])} in SpikeInterface 0.105"
    close = difflib.get_close_matches(key, spec, n=1)
    where = f" for method {method}" if method else ""
    return f"; did you mean {close[0]}?" if close else f"; allowed{where}: {', '.join(spec)}"


def _type_ok(value: Any, code: str) -> bool:
    if value is None:
        return code.endswith("?") or code[0] == "a"
    kind = code[0]
    if kind == "n":
        return isinstance(value, int | float) and not isinstance(value, bool)
    types = {"s": str, "b": bool, "l": list, "m": dict}
    return kind == "a" or isinstance(value, types[kind])


def _got(value: Any) -> str:
    if value is None:
        return "null"
    code = {bool: "b", str: "s", list: "l", dict: "m", int: "n", float: "n"}.get(type(value))
    kind = _TYPE_NAMES[code] if code else type(value).__name__
    text = repr(value)
    return f"{kind} ({text[:40]}{'...' if len(text) > 40 else ''})" if kind != "a mapping" else kind


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _fail(src: str, path: str, message: str) -> NoReturn:
    raise UserError(f"{src}: {path}: {message}")
