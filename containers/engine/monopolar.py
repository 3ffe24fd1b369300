"""SpikeInterface's `monopolar_triangulation` (`minimize_with_log_penality`), SpikeInterface's result to
float32 rounding, for every peak of a chunk at once.

Why hand-written: SpikeInterface calls `scipy.optimize.minimize` (L-BFGS-B, 2-point finite-difference
gradient) once per peak from Python, about 5 ms a peak. L-BFGS-B stops on its gradient tolerance
before the objective's minimum, by up to a few um, so SpikeInterface's locations are its optimizer's
path, not the minimum: a different solver (a batched Levenberg-Marquardt in torch, tried) lands within
1 um of them for only ~94% of peaks. Here every peak follows the same path: scipy's own L-BFGS-B kernel
(`scipy.optimize._lbfgsb.setulb`, reverse communication, as `scipy.optimize._lbfgsb_py` drives it) is
stepped per peak in lockstep, and whenever peaks ask for the objective, it and its finite differences are
evaluated for all of them in one numpy expression, operation for operation as SpikeInterface's
`estimate_distance_error_with_log` (rows grouped by channel count so every sum adds in the same order).
About 0.1 ms a peak on one core; chunks with many peaks are split across `workers` processes.

Like SpikeInterface 0.105's `LocalizeMonopolarTriangulation` node, which discards the result of
`enforce_decrease_shells_data`, `enforce_decrease` changes nothing here (see tests/engine: it is checked).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache

import numpy as np
from scipy.optimize import _lbfgsb
from threadpoolctl import threadpool_limits

# scipy.optimize.minimize's L-BFGS-B defaults (maxcor, ftol / eps, gtol, maxls, maxiter, maxfun, eps).
MEMORY, FACTR, PGTOL, MAX_LINE_SEARCH = 10, 2.2204460492503131e-09 / np.finfo(float).eps, 1e-5, 20
MAX_ITERATIONS = MAX_EVALUATIONS = 15000
FD_STEP = 1e-8
INITIAL_Z_UM = 20.0  # make_initial_guess_and_bounds
TASK_FG, TASK_NEW_X = 3, 1  # setulb asks for f and g at x / reports an iteration
PEAKS_PER_WORKER = 128  # below this a chunk is solved in this process (~13 ms of solving)


def objective(xyz: np.ndarray, w: np.ndarray, lx: np.ndarray, ly: np.ndarray) -> np.ndarray:
    """estimate_distance_error_with_log per row: xyz (B, 3) float64, w (B, k) float32 features, lx/ly
    (B, k) float64 channel positions. The same numpy operations in the same order as SpikeInterface."""
    x, y, z = xyz[:, 0:1], xyz[:, 1:2], xyz[:, 2:3]
    max_data = w.max(axis=1, keepdims=True)
    q = 1.0 / np.sqrt(np.square(x - lx) + np.square(y - ly) + np.square(z))
    alpha = (q * w / max_data).sum(axis=1, keepdims=True) / (q * q).sum(axis=1, keepdims=True)
    estimate = alpha / np.sqrt(np.square(x - lx) + np.square(y - ly) + np.square(z))
    return np.square(w / max_data - estimate).mean(axis=1) - np.log1p(10.0 * xyz[:, 2]) / 10000.0


def start_and_bounds(w: np.ndarray, lx: np.ndarray, ly: np.ndarray, max_distance: float) -> tuple:
    """make_initial_guess_and_bounds per row (its center of mass stored as float32, z = 20), with the
    start clipped into the bounds as L-BFGS-B does: (start, low, high), each (B, 3) float64."""
    com = np.stack([(w * lx).sum(axis=1), (w * ly).sum(axis=1)], axis=1) / w.sum(axis=1, keepdims=True)
    com32 = com.astype(np.float32)
    ones = np.ones((w.shape[0], 1))
    low = np.concatenate([(com32 - np.float32(max_distance)).astype(np.float64), ones], axis=1)
    high = np.concatenate(
        [(com32 + np.float32(max_distance)).astype(np.float64), 10 * max_distance * ones], axis=1
    )
    start = np.concatenate([com32.astype(np.float64), INITIAL_Z_UM * ones], axis=1)
    return np.clip(start, low, high), low, high


def _value_and_gradient(xyz, w, lx, ly, low, high) -> tuple[np.ndarray, np.ndarray]:
    """f and scipy's 2-point finite-difference gradient (absolute step 1e-8, reversed at an upper bound)."""
    f0 = objective(xyz, w, lx, ly)
    step = np.full_like(xyz, FD_STEP)
    outside = (xyz + step < low) | (xyz + step > high)
    fits = np.abs(step) <= np.maximum(xyz - low, high - xyz)
    step[outside & fits] *= -1
    grad = np.empty_like(xyz)
    for j in range(3):
        moved = xyz.copy()
        moved[:, j] = xyz[:, j] + step[:, j]
        grad[:, j] = (objective(moved, w, lx, ly) - f0) / ((xyz[:, j] + step[:, j]) - xyz[:, j])
    return f0, grad


def _solve_same_width(w: np.ndarray, lx: np.ndarray, ly: np.ndarray, max_distance: float) -> np.ndarray:
    """L-BFGS-B per row, in lockstep; rows share their channel count. Returns (B, 4): x, y, z, alpha."""
    n = w.shape[0]
    xyz, low, high = start_and_bounds(w, lx, ly, max_distance)
    f, grad = np.zeros(n), np.zeros((n, 3))
    nbd = np.full(3, 2, dtype=np.int32)  # both bounds
    work = np.zeros((n, 2 * MEMORY * 3 + 5 * 3 + 11 * MEMORY * MEMORY + 8 * MEMORY))
    iwork, task, line_task = (
        np.zeros((n, 9), np.int32),
        np.zeros((n, 2), np.int32),
        np.zeros((n, 2), np.int32),
    )
    lsave, isave, dsave = np.zeros((n, 4), np.int32), np.zeros((n, 44), np.int32), np.zeros((n, 29))
    iterations, evaluations = np.zeros(n, np.int64), np.zeros(n, np.int64)
    state = [
        (
            xyz[i],
            low[i],
            high[i],
            grad[i],
            work[i],
            iwork[i],
            task[i],
            lsave[i],
            isave[i],
            dsave[i],
            line_task[i],
        )
        for i in range(n)
    ]
    active = list(range(n))
    while active:
        asking, still = [], []
        for i in active:
            x, lo, hi, g, wa, iwa, tk, ls, isv, ds, lt = state[i]
            _lbfgsb.setulb(
                MEMORY, x, lo, hi, nbd, f[i], g, FACTR, PGTOL, wa, iwa, tk, ls, isv, ds, MAX_LINE_SEARCH, lt
            )
            if tk[0] == TASK_FG:
                asking.append(i)
                still.append(i)
            elif tk[0] == TASK_NEW_X:
                iterations[i] += 1
                if iterations[i] < MAX_ITERATIONS and evaluations[i] <= MAX_EVALUATIONS:
                    still.append(i)
        if asking:
            rows = np.array(asking)
            f[rows], grad[rows] = _value_and_gradient(
                xyz[rows], w[rows], lx[rows], ly[rows], low[rows], high[rows]
            )
            evaluations[rows] += 4
        active = still
    # SpikeInterface's final alpha, on the unnormalised feature.
    q = 1.0 / np.sqrt(np.square(xyz[:, 0:1] - lx) + np.square(xyz[:, 1:2] - ly) + np.square(xyz[:, 2:3]))
    alpha = (w * q).sum(axis=1) / np.square(q).sum(axis=1)
    return np.concatenate([xyz, alpha[:, None]], axis=1)


def solve_rows(
    features: np.ndarray, positions: np.ndarray, counts: np.ndarray, max_distance: float
) -> np.ndarray:
    """features (B, k) float32 and positions (B, k, 2) with each row's `counts` real channels first (in
    SpikeInterface's channel order): (B, 4) float64 x, y, z, alpha. Single-threaded BLAS: setulb's tiny
    matrix products are 200x slower with OpenBLAS threads."""
    out = np.full((features.shape[0], 4), np.nan)
    with threadpool_limits(1):
        for width in np.unique(counts):
            rows = np.flatnonzero(counts == width)
            w, pos = features[rows, :width], positions[rows, :width]
            out[rows] = _solve_same_width(w, pos[..., 0], pos[..., 1], max_distance)
    return out


@lru_cache(maxsize=2)
def _pool(workers: int) -> ProcessPoolExecutor:
    # spawn: never fork a process whose torch/OpenMP threads are running. The workers import numpy and
    # scipy only (containers.engine loads nothing eagerly).
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def start_workers(workers: int) -> None:
    """Start the solver processes now, in the background, so that the first chunk does not wait for them."""
    if workers > 1:
        pool = _pool(workers)
        for _ in range(workers):
            pool.submit(int)


def solve(
    features: np.ndarray, positions: np.ndarray, counts: np.ndarray, max_distance: float, workers: int = 1
) -> np.ndarray:
    """`solve_rows`, split across `workers` processes when there are enough rows to pay for it."""
    parts = min(workers, features.shape[0] // PEAKS_PER_WORKER)
    if parts <= 1:
        return solve_rows(features, positions, counts, max_distance)
    split = np.array_split(np.arange(features.shape[0]), parts)
    futures = [
        _pool(workers).submit(solve_rows, features[s], positions[s], counts[s], max_distance) for s in split
    ]
    return np.concatenate([future.result() for future in futures])
