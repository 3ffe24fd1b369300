"""A failed step's one-line error (`wisc-sort step <step>: error: ...`) reaches the failure message, however
the step's output was cut into chunks and whatever progress bars surround it."""

from __future__ import annotations

from tasks.execution.base import ErrorLine


def test_the_last_error_line_is_kept_across_chunks_and_progress_bars() -> None:
    sink = ErrorLine()
    stream = (
        b"write recording.dat:  10%|#\rwrite recording.dat:  20%|##\r"
        b"wisc-sort step recording_dat: error: /mnt/ssd: drive full while writing /mnt/ssd/x/recording.dat: "
        b"12 MiB missing (330 MiB to write, 0 B free); free space and run the same command again\n"
        b"some library noise: error: not ours\n"
    )
    for start in range(0, len(stream), 7):  # the relay reads whatever the pipe holds
        sink.write(stream[start : start + 7])
    assert sink.line == (
        "/mnt/ssd: drive full while writing /mnt/ssd/x/recording.dat: 12 MiB missing (330 MiB to write, 0 B "
        "free); free space and run the same command again"
    )
    assert ErrorLine().line == ""
