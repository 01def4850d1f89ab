"""The predictor's inference slots: at most ``slots`` images are decoded and run at once."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from serving_support import cached_bundle, store_builtin

from app.serving.predictor import Predictor, default_inference_slots
from model_store import Store, open_store
from model_store.artifacts import Blob
from pose_core.inference.runtime import OnnxRunner

ZIDANE = Path(__file__).resolve().parents[1] / "data" / "ultralytics_zidane.jpg"


class CountingPredictor(Predictor):
    """Counts the model calls running at the same time (the runners are the real ones)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.running = 0
        self.most_running = 0
        self._count_lock = threading.Lock()

    def runner(self, blob: Blob) -> OnnxRunner:
        inner = super().runner(blob)

        def counted(batch: np.ndarray) -> list[np.ndarray]:
            with self._count_lock:
                self.running += 1
                self.most_running = max(self.most_running, self.running)
            try:
                return inner(batch)
            finally:
                with self._count_lock:
                    self.running -= 1

        return counted  # type: ignore[return-value]


@pytest.fixture(scope="module")
def store(blazepose_assets, tmp_path_factory: pytest.TempPathFactory) -> Store:
    folder = tmp_path_factory.mktemp("slots") / "data"
    store = open_store(f"sqlite:///{folder / 'metadata.sqlite3'}", folder)
    store_builtin(store, cached_bundle(blazepose_assets.landmark_tflite.parent))
    yield store
    store.close()


@pytest.mark.parametrize("slots", [1, 2])
def test_at_most_slots_images_run_at_once(store: Store, slots: int) -> None:
    predictor = CountingPredictor(store, threads=1, cache_size=1, slots=slots)
    served = predictor.served_version("blazepose-full", "latest")
    data = ZIDANE.read_bytes()

    def one(_: int) -> int:
        prediction = predictor.predict_bytes(
            served, data, max_bytes=len(data), max_pixels=10**7, max_people=10, min_score=0.5
        )
        assert prediction.timings["queue"] >= 0
        return len(prediction.people)

    with ThreadPoolExecutor(4) as pool:
        people = list(pool.map(one, range(4)))
    assert people == [2, 2, 2, 2]
    assert 1 <= predictor.most_running <= slots


def test_default_slots_keep_every_core_busy_plus_one() -> None:
    cores = len(os.sched_getaffinity(0))
    assert default_inference_slots(threads=cores) == 2
    assert default_inference_slots(threads=1) == cores + 1
