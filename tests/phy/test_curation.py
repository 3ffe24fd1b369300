"""The curation gate on phy files written here: uncurated units listed, cluster_info.tsv missing."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.core.errors import UserError
from tasks.phy.curation import curation_hash, curation_state, require_curated


def sort_output(folder, n_units: int = 25):
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "spike_clusters.npy", np.repeat(np.arange(n_units), 3).astype(np.int32))
    return folder


def write_tsv(path, rows: dict[int, str], column: str = "group") -> None:
    path.write_text(f"cluster_id\t{column}\n" + "".join(f"{u}\t{g}\n" for u, g in rows.items()))


def test_uncurated_units_listed_first_20_and_count(tmp_path):
    out = sort_output(tmp_path / "sorter_output")
    write_tsv(out / "cluster_group.tsv", {0: "good", 1: "noise"})
    write_tsv(out / "cluster_info.tsv", {u: "" for u in range(25)})
    state = curation_state(out)
    assert state.n_units == 25 and state.problem is None and not state.complete
    assert state.uncurated == list(range(2, 25))
    with pytest.raises(UserError) as err:
        require_curated(out)
    message = str(err.value)
    assert "23 of 25 units lack a group: 2, 3," in message and ", 21, ... (23 in all)" in message
    assert "22" not in message.split("21")[1].split("(")[0]  # only the first 20 ids are shown
    assert "phy template-gui" in message and str(out / "params.py") in message and "\n" not in message


def test_cluster_info_missing_is_a_problem_even_with_every_group(tmp_path):
    out = sort_output(tmp_path / "sorter_output", 3)
    write_tsv(out / "cluster_group.tsv", {0: "good", 1: "mua", 2: "noise"})
    state = curation_state(out)
    assert state.uncurated == [] and state.problem == "cluster_info.tsv missing" and not state.complete
    with pytest.raises(UserError, match="cluster_info.tsv missing .phy never saved"):
        require_curated(out)
    assert require_curated(out, allow_uncurated=True).groups == {0: "good", 1: "mua", 2: "noise"}


def test_cluster_group_wins_over_cluster_info_and_complete_passes(tmp_path):
    out = sort_output(tmp_path / "sorter_output", 3)
    write_tsv(out / "cluster_info.tsv", {0: "mua", 1: "good", 2: "good", 7: ""})  # 7: no spikes
    before = curation_hash(out)
    write_tsv(out / "cluster_group.tsv", {0: "noise"})
    state = require_curated(out)
    assert state.complete and state.groups == {0: "noise", 1: "good", 2: "good"}
    assert curation_hash(out) != before


def test_no_sort_output_and_bad_table(tmp_path):
    assert curation_state(tmp_path / "nothing").problem == "no sort output"
    with pytest.raises(UserError, match="no sort output"):
        require_curated(tmp_path / "nothing", allow_uncurated=True)
    out = sort_output(tmp_path / "sorter_output", 2)
    write_tsv(out / "cluster_info.tsv", {0: "good"})
    (out / "cluster_group.tsv").write_text("cluster_id\tgroup\nx\tgood\n")
    with pytest.raises(UserError, match=r"cluster_group.tsv: line 2: cluster_id 'x' is not an integer"):
        curation_state(out)


def test_quick_state_for_status_agrees_with_the_gate_when_phy_saved(tmp_path):
    out = sort_output(tmp_path / "sorter_output", 5)
    write_tsv(out / "cluster_info.tsv", {0: "good", 1: "", 2: "mua", 3: "", 4: "noise"})
    write_tsv(out / "cluster_group.tsv", {1: "good"})
    exact, quick = curation_state(out), curation_state(out, quick=True)
    assert (quick.n_units, quick.uncurated, quick.problem) == (exact.n_units, exact.uncurated, None)
    assert quick.uncurated == [3] and quick.groups == exact.groups
    (out / "cluster_info.tsv").unlink()  # phy never saved: both say so
    missing = "cluster_info.tsv missing"
    assert curation_state(out, quick=True).problem == curation_state(out).problem == missing


def test_a_ragged_phy_table_is_one_line_naming_the_row(tmp_path):
    out = sort_output(tmp_path / "sorter_output", 2)
    (out / "cluster_info.tsv").write_text("cluster_id\tgroup\n0\tgood\n1\tgood\textra\n")
    with pytest.raises(UserError, match=r"cluster_info.tsv: line 3: 3 fields, the header has 2"):
        curation_state(out)
