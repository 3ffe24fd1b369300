"""What the docker executor asks the engine for, checked without an engine: GPU request, mounts, names."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.core.layout import SortingDir
from tasks.execution.docker import container_name, gpu_request, image_kind, raw_roots


def test_the_sorts_leased_gpu_is_the_only_device_requested_and_is_device_0_inside():
    requests, env = gpu_request({"CUDA_VISIBLE_DEVICES": "1", "OMP_NUM_THREADS": "2"})
    assert len(requests) == 1
    assert requests[0]["DeviceIDs"] == ["1"] and requests[0]["Capabilities"] == [["gpu"]]
    assert env == {"CUDA_VISIBLE_DEVICES": "0", "OMP_NUM_THREADS": "2"}


def test_no_lease_no_gpu():
    assert gpu_request({"OMP_NUM_THREADS": "2"}) == ([], {"OMP_NUM_THREADS": "2"})


def test_raw_roots_are_the_outermost_folders_of_the_segment_table(tmp_path):
    sorting = SortingDir(tmp_path / "sorting.imec0")
    sorting.root.mkdir()
    paths = ["/raw/a/s1/f.bin", "/raw/a/s1/g.bin", "/raw/a/f0.bin", "/raw/b/x/h.bin"]
    pd.DataFrame({"path": paths, "type": "keep"}).to_csv(sorting.segments, sep="\t", index=False)
    assert raw_roots(sorting) == [Path("/raw/a"), Path("/raw/b/x")]


def test_images_and_names():
    assert image_kind("sort", {"sorting": {"sorter_name": "kilosort2_5"}}) == "ks25"
    assert image_kind("sort", {"sorting": {"sorter_name": "kilosort4"}}) == "si"
    assert image_kind("postpro.postpro_chronic_df", {"sorting": {"sorter_name": "kilosort2_5"}}) == "si"
    first = container_name("peaks", SortingDir(Path("/data/exp/full/CNPIX10 Charles/sorting.imec0")))
    second = container_name("peaks", SortingDir(Path("/data/exp/full/CNPIX10 Charles/sorting.imec0")))
    assert first != second and first.startswith("wisc-peaks-CNPIX10-Charles-sorting.imec0-")
