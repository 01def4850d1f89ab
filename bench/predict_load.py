"""End-to-end ``POST /predict`` latency, throughput and API memory against a running server.

Example (the API alone on a data directory holding ``blazepose-full``)::

    posecompress models import-default --data-dir /tmp/pc && \
        posecompress api --data-dir /tmp/pc --port 8123 & API_PID=$!
    python bench/predict_load.py --url http://127.0.0.1:8123 \
        --images ../shared/data/dev/images --concurrency 1,8 --duration 60 --api-pid $API_PID

For each detector mode (``--detectors``, default tiled and single) and each client count, the
photos are sent in turn (cycling) for ``--duration`` seconds (or ``--requests`` requests).
Prints client-side p50 / p95, throughput, errors, the server's ``Server-Timing`` stages
(p50 / p95), for more than one client the throughput ratio to the first client count, and
with ``--api-pid`` the API process's largest resident memory seen while sampling.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import mimetypes
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

_TIMING_ENTRY = re.compile(r"\s*([\w-]+)\s*;\s*dur=([\d.]+)")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
RSS_SAMPLE_S = 0.2


def parse_server_timing(header: str) -> dict[str, float]:
    """``"decode;dur=1.2, detect;dur=8"`` -> ``{"decode": 1.2, "detect": 8.0}`` (ms)."""
    stages = {}
    for part in header.split(","):
        match = _TIMING_ENTRY.match(part)
        if match:
            stages[match.group(1)] = float(match.group(2))
    return stages


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise OSError(f"no VmRSS for pid {pid}")


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)
    people: list[int] = field(default_factory=list)
    stages: list[dict[str, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    max_rss_mib: float | None = None


@dataclass(frozen=True)
class Photo:
    name: str
    data: bytes
    content_type: str

    @classmethod
    def read(cls, path: Path) -> Photo:
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return cls(path.name, path.read_bytes(), kind)


def collect_photos(paths: list[Path]) -> list[Photo]:
    """The photos named, folders expanded to their images (sorted)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            files.append(path)
    return [Photo.read(p) for p in files]


async def _one_request(
    client: httpx.AsyncClient, url: str, photo: Photo, form: dict[str, str], result: LoadResult
) -> None:
    start = time.perf_counter()
    try:
        response = await client.post(
            url, files={"image": (photo.name, photo.data, photo.content_type)}, data=form
        )
    except httpx.HTTPError as exc:
        result.errors.append(f"{photo.name}: {type(exc).__name__} {exc}")
        return
    elapsed_ms = (time.perf_counter() - start) * 1000.0
    if response.status_code != 200:
        result.errors.append(f"{photo.name}: {response.status_code} {response.text[:200]}")
        return
    result.latencies_ms.append(elapsed_ms)
    result.people.append(len(response.json().get("people", [])))
    result.stages.append(parse_server_timing(response.headers.get("server-timing", "")))


async def _sample_rss(pid: int, result: LoadResult, stop: asyncio.Event) -> None:
    while not stop.is_set():
        rss = rss_mib(pid)
        result.max_rss_mib = max(result.max_rss_mib or 0.0, rss)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RSS_SAMPLE_S)


async def run_load(
    url: str,
    photos: list[Photo],
    concurrency: int,
    form: dict[str, str],
    *,
    requests: int | None,
    duration_s: float | None,
    warmup: int,
    timeout_s: float,
    api_pid: int | None,
) -> LoadResult:
    """``warmup`` requests, then ``concurrency`` clients sending the photos in turn until
    ``requests`` were sent or ``duration_s`` passed."""
    result = LoadResult()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        for photo in photos[:warmup]:
            await _one_request(client, url, photo, form, LoadResult())
        order = itertools.cycle(photos)
        sent = itertools.count()
        stop = asyncio.Event()
        start = time.perf_counter()

        def more() -> bool:
            if duration_s is not None and time.perf_counter() - start >= duration_s:
                return False
            return requests is None or next(sent) < requests

        async def worker() -> None:
            while more():
                await _one_request(client, url, next(order), form, result)

        sampler = (
            asyncio.create_task(_sample_rss(api_pid, result, stop)) if api_pid is not None else None
        )
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.wall_s = time.perf_counter() - start
        stop.set()
        if sampler is not None:
            await sampler
    return result


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def describe(label: str, result: LoadResult, base_throughput: float | None) -> float:
    """Print one run; returns its throughput (requests/s)."""
    done = len(result.latencies_ms)
    throughput = done / result.wall_s if result.wall_s > 0 else 0.0
    line = f"{label}: requests {done}, errors {len(result.errors)}, wall {result.wall_s:.1f} s"
    if done:
        lat = result.latencies_ms
        line += f", p50 {_p(lat, 50):.1f} ms, p95 {_p(lat, 95):.1f} ms"
    line += f", throughput {throughput:.2f}/s"
    if base_throughput:
        line += f" ({throughput / base_throughput:.2f}x of the first client count)"
    if result.max_rss_mib is not None:
        line += f", API RSS max {result.max_rss_mib:.0f} MiB"
    print(line)
    names = sorted({n for s in result.stages for n in s})
    if names:
        cells = []
        for name in names:
            values = [s[name] for s in result.stages if name in s]
            cells.append(f"{name} {_p(values, 50):.1f}/{_p(values, 95):.1f}")
        print(f"{label}: server-timing p50/p95 ms  " + "  ".join(cells))
    if done:
        print(f"{label}: people per answer {sorted(set(result.people))}")
    for error in result.errors[:5]:
        print(f"{label}: error {error}")
    return throughput


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    parser.add_argument(
        "--images",
        type=Path,
        nargs="+",
        default=[Path("tests/data/ultralytics_bus.jpg")],
        help="photos or folders of photos, sent in turn",
    )
    parser.add_argument("--requests", type=int, default=None, help="measured requests per run")
    parser.add_argument("--duration", type=float, default=None, help="seconds per run")
    parser.add_argument("--concurrency", default="1", help="client counts, e.g. 1,8")
    parser.add_argument("--detectors", default="tiled,single", help="detector modes to run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--model", default=None, help="model name (default: server's default)")
    parser.add_argument("--version", default=None, help="version number or alias")
    parser.add_argument("--max-people", type=int, default=None)
    parser.add_argument("--api-pid", type=int, default=None, help="sample this process's RSS")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request seconds")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.concurrency.split(",")]
    if min(counts) < 1 or (args.requests is not None and args.requests < 1):
        parser.error("--requests and --concurrency must be >= 1")
    if args.requests is None and args.duration is None:
        args.requests = 50

    photos = collect_photos(args.images)
    if not photos:
        parser.error("no photos found")
    url = args.url.rstrip("/") + "/predict"
    print(f"{len(photos)} photos, url {url}")
    failed = False
    for detector in args.detectors.split(","):
        form = {
            k: str(v)
            for k, v in (
                ("model", args.model),
                ("version", args.version),
                ("max_people", args.max_people),
                ("detector", detector),
            )
            if v is not None
        }
        base: float | None = None
        for count in counts:
            result = asyncio.run(
                run_load(
                    url,
                    photos,
                    count,
                    form,
                    requests=args.requests,
                    duration_s=args.duration,
                    warmup=args.warmup,
                    timeout_s=args.timeout,
                    api_pid=args.api_pid,
                )
            )
            throughput = describe(f"{detector} x{count}", result, base)
            base = base or throughput
            failed = failed or bool(result.errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
