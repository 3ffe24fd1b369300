"""Thread caps once libraries are loaded: BLAS (threadpoolctl), numba and torch each get `n_jobs`."""

from __future__ import annotations


def cap_threads_runtime(n_jobs: int) -> None:
    """Belt and braces once libraries are loaded (a library may have been imported early)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n_jobs)
    try:
        import numba

        numba.set_num_threads(min(n_jobs, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass
    try:
        import torch

        torch.set_num_threads(n_jobs)
        torch.set_num_interop_threads(n_jobs)
    except (ImportError, RuntimeError):
        pass
