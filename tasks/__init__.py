"""Planning layer of wisc-sorting: the Luigi DAG and the lab's inputs (imports without spikeinterface)."""

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
