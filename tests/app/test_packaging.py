"""Settings, the CLI surface and the deployment files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from service_support import REPO_ROOT

from app.cli import build_parser
from common.settings import MAX_SOCKET_PATH, Settings, embedded_socket_path


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("POSECOMPRESS_PORT", "9123")
    monkeypatch.setenv("POSECOMPRESS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("POSECOMPRESS_API_KEY", "")
    monkeypatch.setenv("POSECOMPRESS_JOB_WORKERS", "3")
    settings = Settings()
    assert settings.port == 9123 and settings.job_workers == 3 and settings.api_key is None
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'metadata.sqlite3'}"
    assert settings.effective_redis_url == f"redis+socket://{tmp_path / 'redis' / 'redis.sock'}"
    monkeypatch.setenv("POSECOMPRESS_REDIS_URL", "redis://example:6379/2")
    assert Settings().effective_redis_url == "redis://example:6379/2"


def test_long_data_dir_gets_a_short_stable_socket(tmp_path: Path):
    deep = tmp_path / ("d" * 120)
    socket = embedded_socket_path(deep)
    assert len(str(socket)) <= MAX_SOCKET_PATH
    assert socket == embedded_socket_path(deep)
    assert socket != embedded_socket_path(tmp_path / ("e" * 120))


def test_cli_subcommands():
    parser = build_parser()
    args = parser.parse_args(["serve", "--port", "8100", "--job-workers", "2", "--data-dir", "x"])
    assert (args.command, args.port, args.job_workers, str(args.data_dir)) == (
        "serve",
        8100,
        2,
        "x",
    )
    assert parser.parse_args(["worker"]).command == "worker"
    assert parser.parse_args(["api", "--host", "0.0.0.0"]).host == "0.0.0.0"


def test_compose_file_defines_a_scalable_stack():
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "postgres", "api", "worker"}
    for name in services:
        assert "healthcheck" in services[name], name
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=3
    assert worker["command"] == ["posecompress", "worker"]
    assert services["api"]["command"] == ["posecompress", "api"]
    for name in ("api", "worker"):
        assert services[name]["volumes"] == ["data:/data"]
        env = services[name]["environment"]
        assert env["POSECOMPRESS_REDIS_URL"].startswith("redis://redis:")
        assert env["POSECOMPRESS_DATABASE_URL"].startswith("postgresql+psycopg://")
        for key in env:
            field = key.removeprefix("POSECOMPRESS_").lower()
            assert field in Settings.model_fields, key


def test_docker_compose_config_passes():
    if (
        shutil.which("docker")
        and subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False
        ).returncode
        == 0
    ):
        command = ["docker", "compose", "config", "-q"]
    elif shutil.which("docker-compose"):
        command = ["docker-compose", "config", "-q"]
    else:
        pytest.skip("no docker compose client on this machine")
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_dockerfile_is_cpu_torch_non_root():
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    assert "download.pytorch.org/whl/cpu torch==2.13.0" in text
    assert "\nUSER posecompress" in text
    assert 'CMD ["posecompress", "api"]' in text
