"""Options as flat `a.b.c` keys, and how a sorting's options differ from the shipped defaults."""

from __future__ import annotations

import yaml

from tasks.options.files import default_options


def flatten_options(value: object, prefix: str = "") -> dict[str, object]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`; a preprocessing list is keyed by step name (its step_params)."""
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, item in value.items():
            out.update(flatten_options(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) and "step_name" in v for v in value):
        out = {}
        for item in value:
            out.update(flatten_options(item.get("step_params") or {}, f"{prefix}.{item['step_name']}"))
        return out or {prefix: value}
    return {prefix: value}


def diff_against(opts: dict, shipped_name: str) -> list[tuple[str, object, object]]:
    """(key, shipped, in force) for each key of `opts` that differs from the shipped file `shipped_name`."""
    mine = flatten_options(opts)
    shipped = flatten_options(yaml.safe_load(default_options(shipped_name).read_text()) or {})
    keys = sorted(set(mine) | set(shipped))
    return [
        (key, shipped.get(key, "-"), mine.get(key, "-")) for key in keys if shipped.get(key) != mine.get(key)
    ]


def options_diff(opts: dict) -> tuple[str, list[tuple[str, object, object]]]:
    """The shipped sorting options file closest to `opts` (fewest differing keys) and that diff."""
    folder = default_options("sorting_demo.yaml").parent
    diffs = [(path.name, diff_against(opts, path.name)) for path in sorted(folder.glob("sorting_*.yaml"))]
    return min(diffs, key=lambda item: len(item[1]), default=("", []))
