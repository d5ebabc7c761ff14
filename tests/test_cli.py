"""The islet-cds command: evaluate runs the same pipeline as the HTTP endpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from service.cli import main
from tests.conftest import glucose_order, islet_order, order_sign_request
from tests.test_api_hooks import full_prefetch


def write(tmp_path: Path, body: dict[str, Any]) -> str:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(body))
    return str(path)


def test_evaluate_prints_a_decision_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, order_sign_request(islet_order(), prefetch=full_prefetch()))
    assert main(["evaluate", path, "--today", "2026-06-01"]) == 0
    out = capsys.readouterr().out
    assert "A1" in out and "met" in out


def test_evaluate_json_equals_the_http_response(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                client: Any) -> None:
    request = order_sign_request(islet_order(), prefetch=full_prefetch())
    path = write(tmp_path, request)
    assert main(["evaluate", path, "--json", "--today", "2026-06-01"]) == 0
    printed = json.loads(capsys.readouterr().out)
    http = client.post("/cds-services/islet-transplant-order-sign", json=request).get_json()
    assert printed == http


def test_evaluate_out_of_scope(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, order_sign_request(glucose_order(), prefetch=full_prefetch()))
    assert main(["evaluate", path]) == 0
    assert "no decision" in capsys.readouterr().out


def test_evaluate_invalid_request_prints_an_operation_outcome(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    body = order_sign_request(islet_order())
    del body["hookInstance"]
    assert main(["evaluate", write(tmp_path, body)]) == 1
    outcome = json.loads(capsys.readouterr().err)
    assert outcome["resourceType"] == "OperationOutcome"


def test_evaluate_reads_standard_input() -> None:
    body = json.dumps(order_sign_request(glucose_order(), prefetch=full_prefetch()))
    result = subprocess.run([sys.executable, "-m", "service", "evaluate", "-"], input=body, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "no decision" in result.stdout


def test_unreadable_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "/no/such/file.json"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_serve_refuses_to_start_without_trusted_issuers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ISLET_CDS_DATABASE_URL", f"sqlite:///{tmp_path / 'r.sqlite'}")
    monkeypatch.delenv("ISLET_CDS_AUTH", raising=False)
    monkeypatch.setenv("ISLET_CDS_PUBLIC_BASE_URL", "https://cds.example.org")
    assert main(["serve", "--port", "1"]) == 2
    assert "ISLET_CDS_TRUSTED_ISSUERS" in capsys.readouterr().err


def test_serve_refuses_a_broken_policy_naming_the_field(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from service.policy.loader import DEFAULT_POLICY_DIR

    policy = yaml.safe_load((DEFAULT_POLICY_DIR / "policy.yaml").read_text())
    policy["criteria"]["A3"]["params"]["window_days"] = "a year"
    broken = tmp_path / "policy.yaml"
    broken.write_text(yaml.safe_dump(policy))
    monkeypatch.setenv("ISLET_CDS_AUTH", "disabled")
    monkeypatch.setenv("ISLET_CDS_POLICY_PATH", str(broken))
    monkeypatch.setenv("ISLET_CDS_DATABASE_URL", f"sqlite:///{tmp_path / 'r.sqlite'}")
    assert main(["serve", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "criteria.A3.params.window_days" in err


def test_serve_reports_an_unusable_database(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ISLET_CDS_AUTH", "disabled")
    monkeypatch.setenv("ISLET_CDS_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    assert main(["serve", "--port", "1"]) == 2
    assert "ISLET_CDS_DATABASE_URL" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("auth", "redis_url", "requested", "expected"),
    [("disabled", None, None, 2), ("required", None, None, 1), ("required", "redis://127.0.0.1:6379/0", None, 2),
     ("required", None, 1, 1), ("required", "redis://127.0.0.1:6379/0", 4, 4), ("disabled", None, 3, 3)],
)
def test_worker_count_keeps_replay_protection(auth: str, redis_url: str | None, requested: int | None,
                                              expected: int) -> None:
    from service.cli import _worker_count
    from service.config import Settings

    settings = Settings(auth=auth, redis_url=redis_url, public_base_url="https://cds.example.org")
    assert _worker_count(settings, requested) == expected


def test_several_workers_with_auth_and_no_redis_are_refused() -> None:
    from service.cli import _worker_count
    from service.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="ISLET_CDS_REDIS_URL"):
        _worker_count(Settings(auth="required", public_base_url="https://cds.example.org"), 2)
