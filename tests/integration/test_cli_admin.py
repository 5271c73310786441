"""The new user's path with real processes: start the server, add a deployment with the CLI, see
it in ``status``, restart, find it there; and ``kill -9`` in the middle of admin writes loses no
write the API acknowledged."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ADMIN_KEY = "admin-key-for-tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    def __init__(self, tmp_path: Path, port: int) -> None:
        config = {
            "gateway": {"host": "127.0.0.1", "port": port},
            "auth": {"admin_key_env": "TEST_ADMIN_KEY"},
            "storage": {"path": str(tmp_path / "state.db")},
        }
        self.config = tmp_path / "server.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "INFERENCE_RUNTIME_LOG_LEVEL": "WARNING",
            "TEST_ADMIN_KEY": ADMIN_KEY,
            "INFERENCE_RUNTIME_URL": self.url,
            "INFERENCE_RUNTIME_ADMIN_KEY": ADMIN_KEY,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "inference_runtime.cli.main", "serve", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self.env,
        )
        for _ in range(400):
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        raise AssertionError("the server did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)
            self.process = None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "inference_runtime.cli.main", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            self.url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


def test_a_new_user_adds_a_deployment_and_finds_it_after_a_restart(tmp_path: Path) -> None:
    server = Server(tmp_path, free_port())
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "my-chat",
                "runtime": "fake",
                "replicas": 2,
                "runtime_config": {"output_tokens": 3},
            }
        )
    )
    server.start()
    try:
        deployed = server.cli("deploy", "-f", str(spec))
        assert deployed.returncode == 0, deployed.stderr
        assert "deployment my-chat applied (revision 1, 2 replicas" in deployed.stdout
        for _ in range(200):
            status = server.cli("status")
            if "my-chat  fake     my-chat  2/2    ready" in status.stdout:
                break
            time.sleep(0.05)
        assert "my-chat  fake     my-chat  2/2    ready" in status.stdout, status.stdout
        assert "my-chat#0" in status.stdout and "my-chat#1" in status.stdout
        scaled = server.cli("scale", "my-chat", "1")
        assert scaled.returncode == 0 and "scaled to 1" in scaled.stdout
        wrong = server.cli("scale", "nope", "1")
        assert wrong.returncode == 1 and "404" in wrong.stderr
        bad_key = server.cli("ls", "--admin-key", "wrong")
        assert bad_key.returncode == 1 and "401" in bad_key.stderr
    finally:
        server.stop()
    server.start()
    try:
        listed = server.cli("ls")
        assert listed.returncode == 0
        row = next(line for line in listed.stdout.splitlines() if line.startswith("my-chat"))
        assert row.split()[:3] == ["my-chat", "fake", "my-chat"] and "/1" in row
        removed = server.cli("rm", "my-chat")
        assert removed.returncode == 0
        assert "my-chat" not in server.cli("ls").stdout
    finally:
        server.stop()


def test_kill_9_loses_no_acknowledged_write(tmp_path: Path) -> None:
    server = Server(tmp_path, free_port())
    server.start()
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        index = 0
        while not stop.is_set():
            name = f"written-{index}"
            try:
                server.admin("POST", "/admin/deployments",
                             {"name": name, "runtime": "fake", "replicas": 0})  # fmt: skip
            except (urllib.error.URLError, OSError, ConnectionError):
                return  # the server died mid-request: not acknowledged
            acknowledged.append(name)
            index += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while len(acknowledged) < 25 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.stop(signal.SIGKILL)  # in the middle of the stream of writes
    finally:
        stop.set()
        thread.join(timeout=30)
    assert len(acknowledged) >= 25
    server.start()
    try:
        names = {d["name"] for d in server.admin("GET", "/admin/deployments")["data"]}
        missing = [n for n in acknowledged if n not in names]
        assert not missing, f"acknowledged but lost: {missing}"
    finally:
        server.stop()


def _serve(server: Server, config: dict[str, Any], path: Path) -> subprocess.CompletedProcess[str]:
    path.write_text(yaml.safe_dump(config))
    return server.cli("serve", "-c", str(path))


def test_first_run_traps_are_refused_at_once_with_one_clear_line(tmp_path: Path) -> None:
    port = free_port()
    server = Server(tmp_path, port)
    storage = {"path": str(tmp_path / "other.db")}
    gateway = {"host": "127.0.0.1", "port": port}
    typo = {"name": "typo", "runtime": "fake", "runtime_config": {"token_latncy_ms": 5}}
    missing = {"name": "lost", "runtime": "transformers", "model": str(tmp_path / "no-model")}
    server.start()
    try:
        # a second server on the same port: exit 1 before loading anything, one line
        second = _serve(
            server,
            {"gateway": gateway, "storage": storage, "deployments": [fake_spec("x")]},
            tmp_path / "second.yaml",
        )
        assert second.returncode == 1
        assert (
            second.stderr.strip() == f"inference-runtime serve: 127.0.0.1:{port} is already in use"
        )
        assert not (tmp_path / "other.db").exists()
        # an address that is not this machine's: the same, naming it (no traceback)
        elsewhere = _serve(
            server,
            {
                "gateway": {"host": "203.0.113.7", "port": port},
                "auth": {"allow_unauthenticated": True},
                "storage": storage,
            },
            tmp_path / "elsewhere.yaml",
        )
        assert elsewhere.returncode == 1
        assert elsewhere.stderr.strip().startswith(
            f"inference-runtime serve: cannot listen on 203.0.113.7:{port}: "
        ), elsewhere.stderr
        assert not (tmp_path / "other.db").exists()
        # deploy: a typo in runtime_config, a model that does not exist -> exit 1 naming them
        for spec, named in ((typo, "token_latncy_ms"), (missing, "no-model")):
            path = tmp_path / f"{spec['name']}.yaml"
            path.write_text(yaml.safe_dump(spec))
            deployed = server.cli("deploy", "-f", str(path))
            assert deployed.returncode == 1 and "400" in deployed.stderr, deployed.stderr
            assert named in deployed.stderr
        assert "typo" not in server.cli("ls").stdout
    finally:
        server.stop()
    # serve --config with the same mistakes (or a runaway count): exit 2 naming them
    free = {"host": "127.0.0.1", "port": free_port()}
    for spec, named in (
        (typo, "token_latncy_ms"),
        (missing, "no-model"),
        ({**fake_spec("many"), "replicas": 10**6}, "max_replicas"),
    ):
        refused = _serve(
            server,
            {"gateway": free, "storage": storage, "deployments": [spec]},
            tmp_path / "c.yaml",
        )
        assert refused.returncode == 2 and named in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr


def fake_spec(name: str) -> dict[str, Any]:
    return {"name": name, "runtime": "fake"}
