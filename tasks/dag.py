"""`luigi --module tasks.dag <Task>`: registers every Luigi task of the pipeline (and nothing else
imports it).

The Luigi settings the pipeline's safety relies on (tasks/execution/luigi_defaults.cfg) are read below
every config file as soon as this module loads, so `luigi --module tasks.dag` from any folder has them;
the `luigi` command also runs with the few `wisc-sort` pins (keep-alive, completion checks, one try per step).

With `luigi ... --local-scheduler` it also sets wisc-sort's local limits (cpu = this host's cores,
disk_write = 1, gpu = 3 per GPU) where luigi.cfg's [resources] leaves them unset: an undeclared resource
has limit 1, so a step with --n-jobs 2 would never start. luigid ignores a client's limits.
"""

import os
import sys

from tasks.execution.luigi_config import install_defaults, pin
from tasks.steps.export import ExportNwb  # noqa: F401  (NWB export after postprocessing)
from tasks.steps.finalize import Finalize  # noqa: F401  (the end of the DAG)
from tasks.steps.pipeline import TASKS, Pipeline, Preprocess, SetupSorting  # noqa: F401
from tasks.steps.postpro import Postpro  # noqa: F401

globals().update({cls.__name__: cls for cls in TASKS.values()})  # Peaks, Motion, ..., Sort by name
install_defaults()  # the safety settings (retries, keep-alive, exit codes) whatever luigi.cfg says or lacks

if os.path.basename(sys.argv[0]) in ("luigi", "luigi-deps-tree"):
    from tasks.execution.build import ensure_local_resources

    ensure_local_resources()
    pin()  # as `wisc-sort` runs: keep-alive, completion checked, no retry loop, whatever luigi.cfg says
