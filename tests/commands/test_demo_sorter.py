"""`wisc-sort demo --sorter kilosort4`: the demo's chain with Kilosort 4's sort, and a word on how long
before it starts (on a CPU Kilosort 4 runs at a few percent of real time)."""

from __future__ import annotations

import yaml

from tasks.commands.cli import build_parser
from tasks.commands.demo import demo_options
from tasks.options.files import default_options


def test_kilosort4_demo_options_and_the_time_it_announces(demo_world, capfd):
    path = demo_options(demo_world.folder, "kilosort4")
    opts = yaml.safe_load(path.read_text())
    demo = yaml.safe_load(default_options("sorting_demo.yaml").read_text())
    assert opts["preprocessing"] == demo["preprocessing"] and opts["engine"] == demo["engine"]
    assert opts["sorting"]["sorter_name"] == "kilosort4"
    out = capfd.readouterr().out
    assert "kilosort4" in out.lower() and ("cpu" in out.lower() or "gpu" in out.lower()), out
    assert demo_options(demo_world.folder, "tridesclous2") == default_options("sorting_demo.yaml")
    assert build_parser().parse_args(["demo", "--sorter", "kilosort4"]).sorter == "kilosort4"
