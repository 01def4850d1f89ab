"""End-to-end ``POST /predict`` latency and throughput against a running server.

Example (server started with ``posecompress serve``)::

    python bench/predict_load.py --url http://127.0.0.1:8000 \
        --image tests/data/ultralytics_bus.jpg --requests 100 --concurrency 2

Prints p50 / p95 / mean client-side latency, throughput, how many people each answer held,
and the server's own ``Server-Timing`` stages (median per stage).
"""

from __future__ import annotations

import argparse
import asyncio
import mimetypes
import re
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np

_TIMING_ENTRY = re.compile(r"\s*([\w-]+)\s*;\s*dur=([\d.]+)")


def parse_server_timing(header: str) -> dict[str, float]:
    """``"decode;dur=1.2, detect;dur=8"`` -> ``{"decode": 1.2, "detect": 8.0}`` (ms)."""
    stages = {}
    for part in header.split(","):
        match = _TIMING_ENTRY.match(part)
        if match:
            stages[match.group(1)] = float(match.group(2))
    return stages


async def _one_request(
    client: httpx.AsyncClient, url: str, image: bytes, filename: str, form: dict[str, str]
) -> tuple[float, int, dict[str, float]]:
    content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    start = time.perf_counter()
    response = await client.post(url, files={"image": (filename, image, content_type)}, data=form)
    elapsed_ms = (time.perf_counter() - start) * 1000.0
    if response.status_code != 200:
        raise RuntimeError(f"/predict answered {response.status_code}: {response.text[:300]}")
    people = len(response.json().get("people", []))
    return elapsed_ms, people, parse_server_timing(response.headers.get("server-timing", ""))


async def run_load(
    base_url: str,
    image_path: Path,
    requests: int,
    concurrency: int,
    warmup: int,
    form: dict[str, str],
    timeout_s: float,
) -> tuple[list[float], list[int], list[dict[str, float]], float]:
    """Send ``warmup`` then ``requests`` requests, ``concurrency`` at a time.

    Returns: per-request latencies (ms), people counts, Server-Timing stages, wall seconds.
    """
    image = image_path.read_bytes()
    url = base_url.rstrip("/") + "/predict"
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        for _ in range(warmup):
            await _one_request(client, url, image, image_path.name, form)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(requests):
            queue.put_nowait(index)
        results: list[tuple[float, int, dict[str, float]]] = []

        async def worker() -> None:
            while True:
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                results.append(await _one_request(client, url, image, image_path.name, form))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall_s = time.perf_counter() - start
    return [r[0] for r in results], [r[1] for r in results], [r[2] for r in results], wall_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    parser.add_argument("--image", type=Path, default=Path("tests/data/ultralytics_bus.jpg"))
    parser.add_argument("--requests", type=int, default=50, help="measured requests")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--model", default=None, help="model name (default: server's default)")
    parser.add_argument("--version", default=None, help="version number or alias")
    parser.add_argument("--max-people", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request seconds")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be >= 1")

    form = {
        k: str(v)
        for k, v in (
            ("model", args.model),
            ("version", args.version),
            ("max_people", args.max_people),
        )
        if v is not None
    }
    try:
        latencies, people, stages, wall_s = asyncio.run(
            run_load(
                args.url,
                args.image,
                args.requests,
                args.concurrency,
                args.warmup,
                form,
                args.timeout,
            )
        )
    except (httpx.HTTPError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    values = np.asarray(latencies)
    print(f"image {args.image} ({args.image.stat().st_size} bytes), url {args.url}/predict")
    print(f"requests {len(values)}, concurrency {args.concurrency}, wall {wall_s:.2f} s")
    print(
        f"latency ms: p50 {np.percentile(values, 50):.1f}  p95 {np.percentile(values, 95):.1f}  "
        f"mean {values.mean():.1f}  min {values.min():.1f}  max {values.max():.1f}"
    )
    print(f"throughput: {len(values) / wall_s:.2f} requests/s")
    print(f"people per answer: {sorted(set(people))}")
    names = sorted({name for s in stages for name in s})
    if names:
        medians = {n: statistics.median(s[n] for s in stages if n in s) for n in names}
        print("server-timing median ms: " + "  ".join(f"{n} {v:.1f}" for n, v in medians.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
