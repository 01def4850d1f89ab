"""Per-stage ``/predict`` latency in process, against its floor (the model calls alone).

Runs the serving path without HTTP (``app.serving`` decoding + ``Predictor`` on a temporary
store holding the built-in ``blazepose-full``) over a folder of photos, with 1 and 8 client
threads, detector tiled and single. Every ONNX Runtime call is timed, and its input shape
recorded; right after each request, its client thread replays exactly those calls (same
batch shapes, same sessions, in an inference slot) on the same inputs, with nothing else
around them: the floor. Replaying at once lets the batches go, as a server's do (kept for
a later replay, they made every request fault in fresh memory).

Prints, per mode and client count, p50 / p95 of each stage (``queue``, ``decode``,
``detect``, ``landmarks``, ``models``, ``total``), the overhead share (``1 - models / (total
- queue)`` over all requests: waiting for a slot is not overhead) and the ratio of the
pipeline's p50 ``total - queue`` to the floor's. ``--ap`` also prints COCO AP of the same
pipeline in detector mode (tiled, as ``posecompress eval --mode detector``).

    python bench/predict_stages.py --images ../shared/data/dev/images --rounds 3 --ap
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from app.serving.predictor import Predictor  # noqa: E402
from model_store.artifacts import Blob  # noqa: E402
from model_store.lineage import ServedVersion  # noqa: E402
from pose_core.inference.runtime import OnnxRunner  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
STAGES = ("queue", "decode", "detect", "landmarks", "models", "total")
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 50_000_000


@dataclass
class ModelClock:
    """Seconds spent in model calls and the calls made, per thread (one request per thread)."""

    local: threading.local = field(default_factory=threading.local)

    def start(self) -> None:
        self.local.seconds = 0.0
        self.local.calls = []

    def add(self, runner: OnnxRunner, batch: np.ndarray, seconds: float) -> None:
        self.local.seconds += seconds
        self.local.calls.append((runner, batch))

    def stop(self) -> tuple[float, list[tuple[OnnxRunner, np.ndarray]]]:
        return self.local.seconds, self.local.calls


class TimedRunner:
    """An :class:`OnnxRunner` whose calls are timed into a :class:`ModelClock`."""

    def __init__(self, runner: OnnxRunner, clock: ModelClock) -> None:
        self.runner = runner
        self.clock = clock

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        start = time.perf_counter()
        outputs = self.runner(batch)
        self.clock.add(self.runner, batch, time.perf_counter() - start)
        return outputs

    def __getattr__(self, name: str) -> object:
        return getattr(self.runner, name)


class TimedPredictor(Predictor):
    """The serving predictor with its model calls timed."""

    def __init__(self, *args: object, clock: ModelClock, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.clock = clock

    def runner(self, blob: Blob) -> OnnxRunner:
        return TimedRunner(super().runner(blob), self.clock)  # type: ignore[return-value]


@dataclass(frozen=True)
class Request:
    stages: dict[str, float]
    floor: float  #: seconds of the same model calls replayed alone


def serve_one(
    predictor: TimedPredictor,
    served: ServedVersion,
    data: bytes,
    tiled: bool,
    slots: contextlib.AbstractContextManager | None,
) -> Request:
    """Decode and predict one photo as ``/predict`` does, then replay its model calls."""
    predictor.clock.start()
    if hasattr(predictor, "predict_bytes"):
        prediction = predictor.predict_bytes(
            served,
            data,
            max_bytes=MAX_IMAGE_BYTES,
            max_pixels=MAX_IMAGE_PIXELS,
            max_people=10,
            min_score=0.5,
            tiled=tiled,
        )
    else:  # main before issue 10: the route decoded, then predicted
        from app.serving.images import decode_image

        start = time.perf_counter()
        image = decode_image(data, max_bytes=MAX_IMAGE_BYTES, max_pixels=MAX_IMAGE_PIXELS)
        decoded = time.perf_counter()
        prediction = predictor.predict(served, image, 10, 0.5, tiled)
        prediction.timings.update(decode=decoded - start, total=time.perf_counter() - start)
    seconds, calls = predictor.clock.stop()
    stages = {k: v for k, v in prediction.timings.items() if k in STAGES}
    stages["models"] = seconds
    return Request(stages, replay_floor(calls, slots))


def replay_floor(
    calls: list[tuple[OnnxRunner, np.ndarray]], slots: contextlib.AbstractContextManager | None
) -> float:
    """Seconds to make the same model calls again in a slot, as the request did, nothing
    else (the wait for the slot is not counted, as ``queue`` is not in the pipeline's)."""
    with slots or contextlib.nullcontext():
        start = time.perf_counter()
        for runner, batch in calls:
            runner(batch)
        return time.perf_counter() - start


def run_clients(jobs: Sequence[Callable[[], object]], clients: int) -> list[object]:
    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(lambda job: job(), jobs))


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1e3


def report(label: str, requests: list[Request]) -> None:
    cells = []
    for stage in STAGES:
        values = [r.stages[stage] for r in requests if stage in r.stages]
        if values:
            cells.append(f"{stage} {percentile(values, 50):.1f}/{percentile(values, 95):.1f}")
    total = sum(r.stages["total"] - r.stages.get("queue", 0.0) for r in requests)
    models = sum(r.stages["models"] for r in requests)
    pipeline_p50 = statistics.median(
        r.stages["total"] - r.stages.get("queue", 0.0) for r in requests
    )
    floor_p50 = statistics.median(r.floor for r in requests)
    print(f"{label}: p50/p95 ms  " + "  ".join(cells))
    print(
        f"{label}: overhead share {1 - models / total:.1%}  floor p50 {floor_p50 * 1e3:.1f} ms  "
        f"pipeline/floor p50 {pipeline_p50 / floor_p50:.2f}x  ({len(requests)} requests)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=REPO.parent / "shared/data/dev/images")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the photos")
    parser.add_argument("--clients", default="1,8", help="client thread counts")
    parser.add_argument("--detectors", default="tiled,single")
    parser.add_argument("--threads", type=int, default=None, help="ORT threads (settings')")
    parser.add_argument("--assets", type=Path, default=REPO / ".cache" / "assets")
    parser.add_argument("--ap", action="store_true", help="also COCO AP in detector mode")
    parser.add_argument("--dataset", type=Path, default=None, help="for --ap (default: images/..)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from app.serving.builtin_import import import_default
    from common.settings import Settings
    from model_store import open_store

    settings = Settings()
    threads = args.threads or settings.ort_threads
    photos = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    payloads = [p.read_bytes() for p in photos]
    clients = [int(c) for c in args.clients.split(",")]
    detectors = args.detectors.split(",")
    with tempfile.TemporaryDirectory(prefix="predict-stages-") as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'metadata.sqlite3'}", Path(tmp))
        import_default(store, assets=args.assets)
        clock = ModelClock()
        predictor = TimedPredictor(
            store, threads=threads, cache_size=settings.session_cache_size, clock=clock
        )
        served = predictor.served_version("blazepose-full", "latest")
        slot_count = getattr(predictor, "slots", None)  # main before issue 10 had no slots
        slots = None
        if slot_count:
            from app.serving.slots import FairSlots

            slots = FairSlots(slot_count)
        for detector in detectors:  # warm-up: sessions and allocator
            serve_one(predictor, served, payloads[0], detector == "tiled", slots)
        results: dict[str, list[Request]] = {}
        for _ in range(args.rounds):
            for detector in detectors:
                for count in clients:
                    jobs = [
                        lambda d=data, t=detector == "tiled": serve_one(
                            predictor, served, d, t, slots
                        )
                        for data in payloads
                    ]
                    done = run_clients(jobs, count)
                    results.setdefault(f"{detector} x{count}", []).extend(done)  # type: ignore[arg-type]
        print(
            f"{len(photos)} photos from {args.images}, {args.rounds} rounds, ORT threads {threads}"
        )
        for key, requests in results.items():
            report(key, requests)
        if args.ap:
            from pose_core.evaluation.dataset import load_dataset
            from pose_core.evaluation.protocol import evaluate

            dataset = load_dataset(args.dataset or args.images.parent)
            pipeline = predictor.pipeline(served)
            clock.start()
            metrics = evaluate(pipeline, dataset, "detector")
            print(f"detector-mode (tiled) AP {metrics.ap:.4f}  AP50 {metrics.ap50:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
