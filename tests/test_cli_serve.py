"""`frontier-signal serve` takes every setting from its flag, else its FRONTIER_SIGNAL_* variable,
else the default: real `serve` processes, probed over 127.0.0.x."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx

from frontier_signal.service.settings import ServiceSettings

SERVE = [sys.executable, "-m", "frontier_signal.cli", "serve"]


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _env(tmp_path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRONTIER_SIGNAL_")}
    env["FRONTIER_SIGNAL_HOME"] = str(tmp_path / "home")
    env["FRONTIER_SIGNAL_DEVICE"] = "cpu"
    env.update({f"FRONTIER_SIGNAL_{name.upper()}": value for name, value in settings.items()})
    return env


def _wait_up(url: str, process: subprocess.Popen) -> None:
    for _ in range(1200):  # bounded: 120 s on a loaded machine
        assert process.poll() is None, f"the server exited: {process.communicate()[1]}"
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server never answered /health")


def _refused(url: str) -> bool:
    try:
        httpx.get(f"{url}/health", timeout=2)
    except httpx.ConnectError:
        return True
    return False


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(30)


def test_env_vars_alone_set_host_port_and_data_dir_and_a_flag_beats_the_env(tmp_path):
    port = _free_port("127.0.0.2")
    data = tmp_path / "data"
    # NO_AUTH=1 on 127.0.0.2 would be refused (not loopback): the `--auth` flag overrides it.
    env = _env(tmp_path, host="127.0.0.2", port=str(port), data_dir=str(data), no_auth="1")
    process = subprocess.Popen([*SERVE, "--auth"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        _wait_up(f"http://127.0.0.2:{port}", process)
        assert _refused(f"http://127.0.0.1:{port}")  # bound to the env's host only
        assert httpx.get(f"http://127.0.0.2:{port}/v1/runs").status_code == 401  # keys required
        assert (data / "frontier-signal.db").is_file()
    finally:
        _stop(process)


def test_no_auth_from_the_env_and_the_port_flag_beats_the_port_variable(tmp_path):
    env_port, flag_port = _free_port(), _free_port()
    env = _env(tmp_path, port=str(env_port), no_auth="true", data_dir=str(tmp_path / "d"))
    command = [*SERVE, "--port", str(flag_port)]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        _wait_up(f"http://127.0.0.1:{flag_port}", process)
        assert _refused(f"http://127.0.0.1:{env_port}")
        answer = httpx.get(f"http://127.0.0.1:{flag_port}/v1/runs")  # no key: the local tenant
        assert answer.status_code == 200, answer.text
    finally:
        _stop(process)


def test_a_bad_variable_is_refused_with_the_setting_named(tmp_path):
    env = _env(tmp_path, port="eighty", data_dir=str(tmp_path / "d"))
    done = subprocess.run(SERVE, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "port" in done.stderr and "eighty" in done.stderr


def test_help_lists_every_setting_with_its_variable(tmp_path):
    env = _env(tmp_path, data_dir=str(tmp_path / "d"))
    env.update(COLUMNS="400", TERMINAL_WIDTH="400", NO_COLOR="1")
    done = subprocess.run([*SERVE, "--help"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    aliases = {"model_dirs": "--model-dir", "adapters": "--adapter", "ray_address": "--ray"}
    for name in ServiceSettings.model_fields:
        assert aliases.get(name, "--" + name.replace("_", "-")) in done.stdout, name
        assert f"FRONTIER_SIGNAL_{name.upper()}" in done.stdout, name
