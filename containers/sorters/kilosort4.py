"""Kilosort 4 in the sort step: its device from the GPU lease, its log as the progress, its run time."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

from containers.runtime.progress import ProgressFile, format_hours
from tasks.core.errors import UserError

WHERE = "opts.yaml sorting.sorter_params"
# Measured on generated data (benchmarks/results/sorters.md; 2 cores, Kilosort 4.1.7, torch 2.13 CPU):
# 32 channels sort at 0.45x real time, 384 at 0.022x. Seconds per second of recording ~ K * channels ** P.
CPU_SECONDS_K = 0.0315
CPU_SECONDS_P = 1.225
DRIFT_PASS_COST = 0.7  # nblocks > 0 adds a detection pass over the data (~70% of the first one)

# Kilosort 4's stages as its log names them, and each one's share of the run time (384 channels on the CPU:
# universal detection 71%, learned extraction 20%; the drift pass detects spikes too). The share moves the
# step's percentage; tqdm bars (Kilosort's batches) count within the stage.
STAGES = (
    ("Computing preprocessing variables", "preprocessing", 3, ""),
    ("Computing drift correction", "drift correction", 50, "batch"),
    ("Extracting spikes using templates", "detecting spikes", 71, "batch"),
    ("First clustering", "first clustering", 1, "center"),
    ("Extracting spikes using cluster waveforms", "extracting spikes", 20, "batch"),
    ("Final clustering", "final clustering", 1, "center"),
    ("Merging clusters", "merging clusters", 2, ""),
    ("Saving to phy", "saving for phy", 2, ""),
)
RESULT = re.compile(r"^(\d+ (?:spikes extracted|clusters found|units found))")


def cpu_seconds(duration_s: float, num_channels: int, drift_correction: bool = False) -> float:
    """Kilosort 4's run time on 2 CPU cores at the measured rate (what `wisc-sort demo` says up front)."""
    per_second = CPU_SECONDS_K * num_channels**CPU_SECONDS_P
    return duration_s * per_second * (1 + DRIFT_PASS_COST * drift_correction)


def drift_correction_on(params: dict) -> bool:
    """Whether Kilosort 4 corrects drift itself (nblocks > 0 and do_correction), as the options say."""
    return bool(params.get("do_correction", True)) and int(params.get("nblocks", 1)) > 0


def resolve_device(requested: str, lease_device: str | None) -> tuple[str, str]:
    """(torch_device for SpikeInterface, device for the manifest) from the options and the GPU lease.

    `auto` runs on the leased GPU (inside CUDA_VISIBLE_DEVICES it is cuda:0; the manifest names the physical
    device) when torch sees one, else on the CPU: a lease on a machine without CUDA must not fail the sort.
    """
    requested = str(requested or "auto")
    if requested not in ("auto", "cuda", "cpu"):
        raise UserError(
            f"{WHERE}.torch_device {requested!r}: use auto, cuda or cpu (the GPU lease picks the device)"
        )
    if requested == "cpu":
        return "cpu", "cpu"
    import torch

    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise UserError(
            f"{WHERE}.torch_device 'cuda': torch sees no CUDA device here; use auto (the GPU when one is "
            "leased, else the CPU) or cpu, or run on a GPU machine"
        )
    if not has_cuda or (requested == "auto" and lease_device is None):
        return "cpu", "cpu"
    return "cuda", f"cuda:{lease_device}" if lease_device is not None else "cuda"


def sorter_params(params: dict, lease_device: str | None) -> tuple[dict, str]:
    """The options' kilosort4 params checked, with the device resolved; and the device for the manifest."""
    if params.get("save_preprocessed_copy"):
        raise UserError(
            f"{WHERE}.save_preprocessed_copy: true writes a second, whitened copy of the recording "
            "(temp_wh.dat) that the sort step would throw away; set it to false"
        )
    if params.get("use_binary_file") is False:
        raise UserError(
            f"{WHERE}.use_binary_file: false reads recording.dat through SpikeInterface chunk by chunk; "
            "remove it (Kilosort 4 reads recording.dat in place)"
        )
    torch_device, device = resolve_device(params.get("torch_device", "auto"), lease_device)
    return {**params, "torch_device": torch_device}, device


class KilosortProgress(logging.Handler):
    """Kilosort 4's log lines -> the step's progress: the stage it is in, its last result, its batches."""

    def __init__(self, progress: ProgressFile, drift_correction: bool) -> None:
        super().__init__(logging.INFO)
        self.write = progress.update  # the file writer; progress.update goes through bar() while sorting
        weights = [w if name != "drift correction" or drift_correction else 0 for _, name, w, _ in STAGES]
        total, start = float(sum(weights)), 0.0
        self.spans: list[tuple[str, str, float, float, str]] = []
        for (key, name, _, unit), weight in zip(STAGES, weights, strict=True):
            self.spans.append((key, name, 100 * start / total, 100 * weight / total, unit))
            start += weight
        self.stage: tuple[str, str, float, float, str] | None = None
        self.result = ""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().strip()
        stage = next((span for span in self.spans if message.startswith(span[0])), None)
        if stage is not None:
            self.stage = stage
            self.write(stage[2], self._detail(), force=True)
        elif (found := RESULT.match(message)) is not None:
            self.result = found.group(1)

    def _detail(self, unit: str = "") -> str:
        name = self.stage[1] if self.stage else "starting"
        note = f"; {self.result}" if self.result and not unit else ""
        return f"({name}{': ' + unit if unit else ''}{note})"

    def bar(
        self,
        percent: float,
        detail: str = "",
        force: bool = False,
        n: int | None = None,
        total: int | None = None,
    ) -> None:
        """ProgressFile.update for tqdm bars while Kilosort runs: counts within the current stage."""
        if self.stage is None:
            self.write(percent, detail, force, n, total)
            return
        _, _, start, width, unit = self.stage
        self.write(start + width * percent / 100, self._detail(unit or "step"), force, n, total)


@contextmanager
def progress_from_log(progress: ProgressFile, params: dict) -> Iterator[KilosortProgress]:
    """While Kilosort 4 runs (through SpikeInterface, verbose=False): its stages on the step's progress.

    SpikeInterface's wrapper adds Kilosort's file log (kilosort4.log, kept in sorter_output) and, with
    verbose=False, lowers the first plain StreamHandler it finds to warnings: ours, so that only Kilosort's
    warnings reach the step's log, and the console handler it would otherwise add is never made.
    """
    handler = KilosortProgress(progress, drift_correction_on(params))
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logger = logging.getLogger("kilosort")
    level = logger.level
    logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))  # Kilosort's stages are INFO lines
    logger.addHandler(handler)
    logger.addHandler(console)
    progress.update = handler.bar  # type: ignore[method-assign]  # tqdm's hook calls progress.update
    try:
        yield handler
    finally:
        del progress.update  # the class's method again
        for added in (handler, console):
            logger.removeHandler(added)
        logger.setLevel(level)


def cpu_note(duration_s: float, num_channels: int, params: dict) -> str:
    """One line for the step's log when Kilosort 4 runs on the CPU: how long, at the measured rate."""
    seconds = cpu_seconds(duration_s, num_channels, drift_correction_on(params))
    return (
        f"kilosort4 on the CPU: about {format_hours(seconds / 3600)} for {format_hours(duration_s / 3600)} "
        f"of {num_channels} channels (measured on 2 cores; a GPU takes minutes)"
    )


def demo_plan(duration_s: float, num_channels: int, params: dict) -> str:
    """What `wisc-sort demo --sorter kilosort4` says before it starts: the GPU, or how long on the CPU."""
    import torch

    if params.get("torch_device", "auto") != "cpu" and torch.cuda.is_available():
        return f"kilosort4 on the GPU ({torch.cuda.get_device_name(0)}): minutes at most"
    return cpu_note(duration_s, num_channels, params)
