"""`wisc-sort scheduler` seen in a browser: a real pipeline and stand-in GPU sorts run through it; headless
Chromium loads the visualiser and finds the tasks, their progress and the GPU resource (screenshots saved)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tasks.core.manifest import status
from tasks.execution.scheduler import WAITING
from tasks.steps.registry import PREPRO_STEPS
from tests.support.browser import ARTIFACTS, browser
from tests.support.luigid import REPO, start_worker
from tests.support.ops_world import scheduler_env, scheduler_factory_fixture, sort_argv, tasks_by_family  # noqa: F401
from tests.support.pipeline_world import copy_sorting, edit_drift

pytestmark = pytest.mark.slow
PIPELINE_FAMILIES = {"MotionClean", "MotionPlot", "PreprocessedProbe"}


def wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.25):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def start_standin_sorts(server, tmp_path: Path) -> list[subprocess.Popen]:
    """Two chronic stand-in sorts (2 GPU units each of 3) from two workers: one runs, one waits."""
    client = tmp_path / "client.cfg"
    client.write_text(server.client_config())
    env = {k: v for k, v in scheduler_env().items() if k.startswith(("WISC_", "CUDA", "PYTHONPATH"))}
    env["WISC_GPU_LOCK_DIR"] = str(tmp_path / "gpu-locks")
    workers = []
    for name in ("standin-sort-A", "standin-sort-B"):
        args = ["--module", "tests.support.ops_world", "StandInGpuSortReportsBatches", "--workers", "1"]
        args += ["--name", name, "--recording", "chronic", "--out-dir", str(tmp_path)]
        env["PYTHONPATH"] = f"{REPO / 'tests'}:{env['PYTHONPATH']}"
        workers.append(start_worker(args, tmp_path, client, tmp_path / f"{name}.log", env))
    return workers


TABS = {"tasks": "taskList", "workers": "workerList", "resources": "resourceList"}


def page_text(driver, tab: str, needles: list[str], timeout_s: float = 30) -> str:
    """Open the visualiser, click a tab in its top bar, wait until the page shows every needle."""
    driver.get(f"{driver.base}/static/visualiser/index.html")
    link = f"a[data-tab={TABS[tab]}]"
    wait_for(lambda: driver.find_elements("css selector", link), timeout_s, "the top bar")
    driver.find_element("css selector", link).click()
    return wait_for(
        lambda: (t := driver.find_element("tag name", "body").text) and all(n in t for n in needles) and t,
        timeout_s,
        f"{needles} on the {tab} tab",
    )


def status_dialog(driver, display_name: str, expected: str, png: str) -> str:
    """Open the task list, click the task's status-message button, wait for `expected` in the dialog."""
    page_text(driver, "tasks", ["StandInGpuSortReportsBatches"])
    buttons = driver.find_elements("css selector", "button.statusMessage")
    button = next(b for b in buttons if b.get_attribute("data-display-name") == display_name)
    button.click()
    text = wait_for(
        lambda: (t := driver.find_element("id", "statusMessageModal").text) and expected in t and t,
        30,
        f"{expected!r} in the status dialog of {display_name}",
    )
    driver.save_screenshot(str(ARTIFACTS / png))
    return text


def test_visualiser_shows_pipeline_progress_and_gpu(demo_world, first_run, tmp_path, scheduler_factory):
    server = scheduler_factory(watch_interval=1)
    url = server.url + "/"
    # A real pipeline through the scheduler: a copy of a finished preprocessing whose motion cleaning was
    # edited, so that cleaning, the plot and the probe rerun (real SpikeInterface steps).
    source, _ = first_run
    sorting = demo_world.sorting(tmp_path)
    copy_sorting(source, sorting)
    edit_drift(sorting, "clean_motion_kwargs", sigma_smooth_s=3.0)
    standins = start_standin_sorts(server, tmp_path)
    pipeline = subprocess.Popen(
        sort_argv(demo_world, tmp_path, url, "--prepro-only"),
        cwd=tmp_path,
        env=scheduler_env(),
        stdout=(tmp_path / "pipeline.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    ARTIFACTS.mkdir(exist_ok=True)
    driver = browser()
    driver.base = server.url
    try:
        # Through the API first: one stand-in sorts with progress, the other waits for GPU units.
        def gpu_state():
            running = tasks_by_family(server, "RUNNING").get("StandInGpuSortReportsBatches", [])
            pending = tasks_by_family(server, "PENDING").get("StandInGpuSortReportsBatches", [])
            moving = [t for t in running if (t["progress_percentage"] or 0) > 0]
            waiting = [t for t in pending if (t["status_message"] or "").startswith(WAITING)]
            return (moving, waiting) if moving and waiting else None

        moving, waiting = wait_for(gpu_state, 60, "a stand-in sorting and one waiting for GPU units")
        assert moving[0]["status_message"].startswith("sorting: batch ")
        assert waiting[0]["status_message"] == f"{WAITING}: needs 2 'gpu', 2 of 3 in use"
        gpu = next(r for r in server.api("resource_list") if r["name"] == "gpu")
        assert (gpu["num_total"], gpu["num_used"]) == (3, 2)

        # Then through the page, as a person sees it.
        page_text(driver, "tasks", ["StandInGpuSortReportsBatches", "MotionClean"])
        driver.save_screenshot(str(ARTIFACTS / "visualiser-tasks.png"))
        # The status line of each stand-in, in the dialog its comment button opens.
        name = moving[0]["display_name"]
        text = status_dialog(driver, name, "sorting: batch ", "visualiser-sorting-status.png")
        assert "%" in text
        status_dialog(driver, waiting[0]["display_name"], WAITING, "visualiser-waiting-status.png")
        page_text(driver, "workers", ["StandInGpuSortReportsBatches", "%"])
        bars = driver.find_elements("css selector", ".taskProgressBar")
        assert bars and any(b.text.endswith("%") for b in bars), [b.text for b in bars]
        driver.save_screenshot(str(ARTIFACTS / "visualiser-workers.png"))
        page_text(driver, "resources", ["gpu", "cpu", "disk_write", "2/3"])
        expand = "document.querySelectorAll('.resource-box').forEach(e => e.classList.add('in'))"
        driver.execute_script(expand)  # show each resource's running tasks
        time.sleep(0.5)
        driver.save_screenshot(str(ARTIFACTS / "visualiser-resources.png"))
        print(f"screenshots: {sorted(str(p) for p in ARTIFACTS.glob('visualiser-*.png'))}")

        assert pipeline.wait(timeout=300) == 0, (tmp_path / "pipeline.log").read_text()[-3000:]
        for worker in standins:
            assert worker.wait(timeout=120) == 0
    finally:
        driver.quit()
        for process in (pipeline, *standins):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert all(status(sorting, step) == "done" for step in PREPRO_STEPS)
    done = tasks_by_family(server, "DONE")
    assert PIPELINE_FAMILIES <= set(done)
    # The steps relayed their progress lines ("motion_clean: 40% of 19 s ...") and, done, the sorting's
    # report.html as tracking URL (their log while they ran).
    steps = [t for family in PIPELINE_FAMILIES for t in done[family]]
    messages = [t["status_message"] or "" for t in steps]
    assert any(m.split(":")[0] in {"motion_clean", "motion_plot", "preprocessed_probe"} for m in messages)
    assert all(t["tracking_url"] == sorting.report.as_uri() for t in steps)
    assert len(done["StandInGpuSortReportsBatches"]) == 2
