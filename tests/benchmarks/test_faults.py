"""The fault-injection harness (benchmarks/faults.py) in a shortened form: >= 20 seeded SIGKILLs of the worker
or the step program anywhere in sort, postpro and finalize, every rerun checked; none may fail."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from benchmarks import faults

pytestmark = pytest.mark.slow
KILLS = 20


def test_twenty_kills_anywhere_in_the_pipeline_all_survived(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the harness mounts a tmpfs for the home project: needs root")
    out = tmp_path / "faults.md"
    argv = ["--seed", "3", "--kills", str(KILLS), "--references", "1", "--work", str(tmp_path / "work")]
    code = faults.main([*argv, "--out", str(out)])
    text = out.read_text()
    total = re.search(r"^\| all \| (\d+) \| (\d+) \|$", text, re.M)
    assert total, text
    assert int(total[1]) >= KILLS and int(total[2]) == int(total[1]), text
    assert code == 0 and text.rstrip().endswith("- none"), text
    # Kills landed in the sort's steps, in postprocessing and in finalize, not only around them.
    assert re.search(r"^\| (peaks|peak_locations|motion|recording_dat|sort) \|", text, re.M), text
