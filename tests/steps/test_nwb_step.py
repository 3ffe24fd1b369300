"""The nwb step's declaration: called for only when the options name a postprocessing set, and its signature
follows that set (its options, curation), its own options and its upstream steps; naming the set refuses
bad input without writing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tasks.core.errors import UserError
from tasks.core.layout import SortingDir
from tasks.steps.nwb_inputs import name_postpro_set
from tasks.steps.registry import expected, pipeline_steps

REPO = Path(__file__).resolve().parents[2]


def _sorting(tmp_path: Path, nwb: dict | None = None) -> SortingDir:
    sorting = SortingDir(tmp_path / "sorting.imec0")
    (sorting.root / "postpro_demo").mkdir(parents=True)
    opts = yaml.safe_load((REPO / "opts" / "sorting_demo.yaml").read_text())
    if nwb is not None:
        opts["nwb"] = nwb
    sorting.opts.write_text(yaml.safe_dump(opts, sort_keys=False))
    sorting.segments.write_text("fname\ttype\nf.bin\tkeep\n")
    shutil.copy(REPO / "opts" / "postpro_demo.yaml", sorting.root / "postpro_demo" / "postpro_opts.yaml")
    return sorting


def _edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_the_step_applies_only_when_the_options_name_a_set():
    opts = yaml.safe_load((REPO / "opts" / "sorting_demo.yaml").read_text())
    assert "nwb" not in pipeline_steps(opts)
    assert pipeline_steps({**opts, "nwb": {"postpro": "postpro_demo"}})[-1] == "nwb"


def test_the_signature_follows_the_exported_set_its_options_and_upstream(tmp_path):
    sorting = _sorting(tmp_path, {"postpro": "postpro_demo"})
    first = expected(sorting, "nwb")
    assert set(first.upstream) == {"sort", "preprocessed_probe", "motion_clean", "postpro.postpro_demo"}
    assert expected(sorting, "nwb") == first  # stable
    signatures = [first.signature]
    pset_opts = sorting.root / "postpro_demo" / "postpro_opts.yaml"
    _edit(pset_opts, lambda d: d["curation"]["auto_label"]["rules"]["snr"].update(min=5))
    signatures.append(expected(sorting, "nwb").signature)
    (sorting.sorter_output).mkdir(parents=True)
    (sorting.sorter_output / "cluster_group.tsv").write_text("cluster_id\tgroup\n0\tgood\n")
    signatures.append(expected(sorting, "nwb").signature)
    _edit(sorting.opts, lambda d: d["nwb"].update(species="Mus musculus"))
    signatures.append(expected(sorting, "nwb").signature)
    _edit(sorting.opts, lambda d: d["sorting"]["sorter_params"].update(seed=1))
    signatures.append(expected(sorting, "nwb").signature)
    assert len(set(signatures)) == len(signatures)
    # The scan-artifacts thresholds are read by no step.
    _edit(sorting.opts, lambda d: d.update(artifacts={"flat_std": 1.0}))
    assert expected(sorting, "nwb").signature == signatures[-1]
    assert expected(sorting, "sort").signature == expected(sorting, "sort").signature


def test_naming_the_set(tmp_path):
    sorting = _sorting(tmp_path)
    before = sorting.opts.read_text()
    with pytest.raises(UserError, match="names no postprocessing set to export; pass --postpro NAME"):
        name_postpro_set(sorting, None)
    with pytest.raises(UserError, match="no postprocessing set 'other'; run `wisc-sort postpro"):
        name_postpro_set(sorting, "other")
    assert name_postpro_set(sorting, "postpro_demo", check_only=True) == ("postpro_demo", "")
    assert sorting.opts.read_text() == before  # nothing written so far
    name, message = name_postpro_set(sorting, "postpro_demo")
    assert name == "postpro_demo" and "added nwb.postpro = postpro_demo" in message
    assert yaml.safe_load(sorting.opts.read_text())["nwb"] == {"postpro": "postpro_demo"}
    assert sorting.opts.read_text().startswith(before.rstrip("\n"))  # the user's text kept, comments too
    backups = list((sorting.root / "opts.bak").glob("*/opts.yaml"))
    assert len(backups) == 1 and backups[0].read_text() == before
    assert name_postpro_set(sorting, None) == ("postpro_demo", "")
    with pytest.raises(UserError, match="nwb.postpro is 'postpro_demo', not 'x'"):
        name_postpro_set(sorting, "x")
