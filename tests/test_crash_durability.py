"""Kill -9 the server under load: every hook call whose response arrived is in the decision log.

Runs gunicorn (2 sync workers) on a free loopback port with a SQLite decision log, sends hook calls
from threads, SIGKILLs the master and workers (their whole process group) mid-load, then reopens the
database (SQLite recovers the WAL) and looks for every hookInstance that got a 200.

The app is the real one (``service.app:create_app()``), answering order-sign calls with a complete
prefetch, so every answer carries a decision that must be in the log.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

from service.records.store import DecisionLog
from tests.conftest import ROOT, islet_order, order_sign_request
from tests.test_api_hooks import full_prefetch

APP_SPEC = "service.app:create_app()"
SERVICE_ID = "islet-transplant-order-sign"
CLIENT_THREADS = 8
RESPONSES_BEFORE_KILL = 300
START_TIMEOUT_S = 30.0
LOAD_TIMEOUT_S = 60.0


def hook_call(n: int) -> dict[str, Any]:
    return order_sign_request(islet_order(f"islet-{n}"), prefetch=full_prefetch())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_until_serving(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert server.poll() is None, "gunicorn exited during start-up"
        try:
            if requests.get(base + "/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:  # refused while binding, or a worker still booting
            time.sleep(0.1)
    raise AssertionError("gunicorn did not start serving in time")


def test_every_answered_call_survives_sigkill(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'records.sqlite'}"
    DecisionLog(database_url).migrate()  # as `islet-cds serve` does in the master, before forking
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ISLET_CDS_DATABASE_URL": database_url, "ISLET_CDS_AUTH": "disabled",
           "PYTHONPATH": str(ROOT)}
    server_log = (tmp_path / "gunicorn.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}", "--chdir", str(ROOT),
         "--graceful-timeout", "1", "--log-level", "warning", APP_SPEC],
        env=env, start_new_session=True,  # its own process group: master and workers die together below
        stdout=server_log, stderr=subprocess.STDOUT,
    )
    answered: list[str] = []
    failed: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    enough = threading.Event()

    def client(thread_no: int) -> None:
        session = requests.Session()
        n = 0
        while not stop.is_set():
            body = hook_call(thread_no * 1_000_000 + n)
            n += 1
            try:
                response = session.post(f"{base}/cds-services/{SERVICE_ID}", json=body, timeout=5)
            except requests.RequestException:
                with lock:
                    failed.append(body["hookInstance"])
                if server.poll() is not None:
                    return
                continue
            if response.status_code == 200 and "cards" in response.json():
                with lock:
                    answered.append(body["hookInstance"])
                    if len(answered) >= RESPONSES_BEFORE_KILL:
                        enough.set()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENT_THREADS)]
    try:
        _wait_until_serving(base, server)
        for t in threads:
            t.start()
        assert enough.wait(LOAD_TIMEOUT_S), f"only {len(answered)} answers before the time limit"
        # Mid-load: the clients keep sending while master and workers are killed without warning.
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
    finally:
        stop.set()
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        for t in threads:
            if t.is_alive():
                t.join(timeout=10)
        server_log.close()

    assert server.returncode == -signal.SIGKILL
    with lock:
        received = list(answered)
    assert len(received) >= RESPONSES_BEFORE_KILL, (tmp_path / "gunicorn.log").read_text()

    log = DecisionLog(database_url)  # reopening recovers the WAL left by the killed processes
    missing = [h for h in received if not log.invocations(h) or not log.get(h)]
    log.dispose()
    assert missing == [], f"{len(missing)} answered calls are not in the log (e.g. {missing[:3]})"
