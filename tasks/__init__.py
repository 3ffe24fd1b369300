"""Planning layer of wisc-sorting: the Luigi DAG and the lab's inputs (imports without spikeinterface)."""

import os
import sys

from tasks.finalize_task import Finalize  # noqa: F401  (the end of the DAG)
from tasks.pipeline import (  # noqa: F401  (registers the tasks for `luigi --module tasks`)
    Motion,
    MotionClean,
    MotionPlot,
    PeakLocations,
    Peaks,
    Pipeline,
    Preprocess,
    PreprocessedProbe,
    RecordingDat,
    SetupSorting,
    Sort,
)

if os.path.basename(sys.argv[0]) in ("luigi", "luigi-deps-tree"):
    # `luigi --module tasks ... --local-scheduler`: the same local limits as `wisc-sort` (cpu = this host's
    # cores, disk_write = 1, gpu = 3 per GPU) where luigi.cfg's [resources] leaves them unset; an undeclared
    # resource has limit 1, so a step with --n-jobs 2 would never start. luigid ignores a client's limits.
    from tasks.runner import ensure_local_resources

    ensure_local_resources()
