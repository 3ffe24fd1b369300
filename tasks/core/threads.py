"""Thread caps as environment variables: set for a step program before numpy, numba or torch load."""

import os

# Stdlib only: set before numpy loads, by the executor (its environment) and by the step program itself.
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)


def thread_env(n_jobs: int) -> dict[str, str]:
    return {name: str(max(1, n_jobs)) for name in THREAD_ENV_VARS}


def cap_threads_env(n_jobs: int) -> None:
    """Must run before numpy/numba/torch are imported: BLAS and OpenMP read these once, at load."""
    os.environ.update(thread_env(n_jobs))
