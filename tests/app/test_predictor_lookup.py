"""The predictor looks up what serving a version needs once per version, and resolves the
alias or ``latest`` on every request, so alias moves and new versions apply at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from serving_support import cached_bundle, store_builtin

from app.serving.predictor import Predictor
from model_store import Store, open_store
from pose_core.builtin import BUILTIN_MODEL_NAME as MODEL


@pytest.fixture
def store(blazepose_assets, tmp_path: Path) -> Store:
    folder = tmp_path / "data"
    store = open_store(f"sqlite:///{folder / 'metadata.sqlite3'}", folder)
    store_builtin(store, cached_bundle(blazepose_assets.landmark_tflite.parent))
    yield store
    store.close()


def test_a_version_is_looked_up_once_and_aliases_every_time(blazepose_assets, store: Store):
    predictor = Predictor(store, threads=1, cache_size=1)
    first = predictor.served_version(MODEL, "default")
    assert first.version.number == 1
    assert predictor.served_version(MODEL, 1) is first  # cached by version
    store.models.set_alias(MODEL, "prod", 1)
    assert predictor.served_version(MODEL, "prod") is first

    store_builtin(store, cached_bundle(blazepose_assets.landmark_tflite.parent))
    assert predictor.served_version(MODEL, "latest").version.number == 2
    store.models.set_alias(MODEL, "prod", 2)
    assert predictor.served_version(MODEL, "prod").version.number == 2
    assert predictor.served_version(MODEL, "default") is first  # default stays until moved


def test_a_model_made_again_is_not_served_from_the_old_record(blazepose_assets, store: Store):
    predictor = Predictor(store, threads=1, cache_size=1)
    old = predictor.served_version(MODEL, 1)
    store.models.delete_model(MODEL, force=True)
    store_builtin(store, cached_bundle(blazepose_assets.landmark_tflite.parent))
    again = predictor.served_version(MODEL, 1)
    assert again is not old
    assert again.version.created_at > old.version.created_at
