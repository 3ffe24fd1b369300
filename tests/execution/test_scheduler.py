"""`wisc-sort scheduler`: the luigid config it makes from luigi.cfg, and a real luigid started with it."""

from __future__ import annotations

import argparse
import pickle
import urllib.request

import luigi.configuration
import pytest

from tasks.commands.cli import main
from tasks.core.errors import UserError
from tasks.execution.scheduler import (
    WAITING,
    client_scheduler_url,
    gpu_wait_message,
    load_settings,
    luigid_config,
)
from tests.support.ops_world import scheduler_factory_fixture  # noqa: F401


@pytest.fixture
def config(monkeypatch):
    """luigi's config for one test: sections set here are removed afterwards."""
    cfg = luigi.configuration.get_config()
    sections, options = [], []

    def set_option(section: str, key: str, value: str) -> None:
        if not cfg.has_section(section):
            cfg.add_section(section)
            sections.append(section)
        cfg.set(section, key, value)
        options.append((section, key))

    monkeypatch.setenv("WISC_GPU_DEVICES", "0,1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    yield set_option
    for section, key in options:
        cfg.remove_option(section, key)
    for section in sections:
        cfg.remove_section(section)


def test_defaults_loopback_history_delays_and_resources(config, tmp_path):
    settings = load_settings(state_dir=tmp_path)
    text = luigid_config(settings)
    assert settings.address == "127.0.0.1" and settings.url == "http://127.0.0.1:8082/"
    for line in (
        "record_task_history = true",
        f"db_connection = sqlite:///{tmp_path}/task-history.sqlite",
        f"state_path = {tmp_path}/luigi-state.pickle",
        "remove_delay = 172800",
        "worker_disconnect_delay = 600",
        "retry_count = 1",
        "gpu = 6",  # 3 units x the 2 listed devices
        "disk_write = 1",
    ):
        assert line in text.splitlines(), line
    assert "cpu = " in text  # luigid needs it declared, or steps with n_jobs > 1 never run


def test_resources_and_settings_come_from_luigi_cfg(config, tmp_path):
    config("resources", "gpu@hostA", "3")
    config("resources", "gpu@hostB", "6")
    config("resources", "cpu", "64")
    config("wisc_scheduler", "remove_delay", "86400")
    config("wisc_scheduler", "port", "9000")
    settings = load_settings(state_dir=tmp_path, port=9100)
    assert settings.resources == {"gpu@hostA": 3, "gpu@hostB": 6, "cpu": 64, "disk_write": 1}
    assert settings.remove_delay == 86400 and settings.port == 9100  # the flag wins over luigi.cfg


def test_bad_setting_is_one_line_error(config, tmp_path, capsys):
    config("wisc_scheduler", "worker_disconnect_delay", "ten minutes")
    with pytest.raises(UserError, match=r"\[wisc_scheduler\] worker_disconnect_delay = 'ten minutes'"):
        load_settings(state_dir=tmp_path)
    assert main(["scheduler", "--state-dir", str(tmp_path / "s"), "--print-config"]) == 2
    assert capsys.readouterr().err.startswith("wisc-sort: error: [wisc_scheduler] worker_disconnect_delay")
    assert not (tmp_path / "s").exists()  # nothing written


def test_print_config_writes_nothing(config, tmp_path, capsys):
    assert main(["scheduler", "--state-dir", str(tmp_path / "s"), "--print-config"]) == 0
    assert "[task_history]" in capsys.readouterr().out
    assert not (tmp_path / "s").exists()


def test_gpu_wait_message():
    resources = {"gpu": {"num_used": 2, "num_total": 3}, "cpu": {"num_used": 0, "num_total": 2}}
    assert gpu_wait_message({"resources": {"gpu": 2, "cpu": 1}}, resources) == (
        f"{WAITING}: needs 2 'gpu', 2 of 3 in use"
    )
    assert gpu_wait_message({"resources": {"gpu": 1}}, resources) is None
    assert gpu_wait_message({"resources": {"cpu": 4}}, resources) is None  # not about GPUs
    assert "does not declare" in gpu_wait_message({"resources": {"gpu@hostC": 1}}, resources)


def test_client_scheduler_url(config):
    def args(**kw):
        defaults = {"scheduler_url": None, "local_scheduler": False, "command": "sort"}
        return argparse.Namespace(**{**defaults, **kw})

    assert client_scheduler_url(args()) is None  # the local scheduler unless luigi.cfg names one
    config("core", "default_scheduler_url", "http://127.0.0.1:8082/")
    assert client_scheduler_url(args()) == "http://127.0.0.1:8082/"
    assert client_scheduler_url(args(local_scheduler=True)) is None
    assert client_scheduler_url(args(command="demo")) is None
    assert client_scheduler_url(args(scheduler_url="http://h:1/")) == "http://h:1/"


def test_real_luigid_with_history_and_state_file(scheduler_factory):
    server = scheduler_factory(watch_interval=0)
    state = server.config.parent
    resources = {r["name"]: r["num_total"] for r in server.api("resource_list")}
    assert resources["gpu"] == 3 and resources["disk_write"] == 1 and resources["cpu"] >= 1
    with urllib.request.urlopen(f"{server.url}/history", timeout=10) as reply:  # 500 without sqlalchemy<2
        assert reply.status == 200
    assert (state / "task-history.sqlite").exists()
    server.stop()  # SIGTERM reaches luigid through wisc-sort, which saves its state
    assert server.process.returncode == 0
    with (state / "luigi-state.pickle").open("rb") as handle:
        assert pickle.load(handle)


def test_a_local_run_leaves_luigis_config_as_luigi_cfg_has_it(config, monkeypatch):
    from tasks.execution.build import build

    cfg = luigi.configuration.get_config()
    before = {s: dict(cfg.items(s, raw=True)) for s in ("resources", "worker") if cfg.has_section(s)}
    assert build([], argparse.Namespace(workers=1, scheduler_url=None, local_scheduler=True))
    after = {s: dict(cfg.items(s, raw=True)) for s in ("resources", "worker") if cfg.has_section(s)}
    assert {s: v for s, v in after.items() if v} == {s: v for s, v in before.items() if v}
    assert "gpu = 6" in luigid_config(load_settings())  # WISC_GPU_DEVICES=0,1, not a leftover limit
