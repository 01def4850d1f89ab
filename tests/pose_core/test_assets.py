"""Finding the BlazePose files: cache, installed mediapipe, wheel in the cache, clear errors."""

from __future__ import annotations

import importlib
import sys
import zipfile
from pathlib import Path

import pytest

from pose_core.assets import (
    DETECTOR_MEMBER,
    LANDMARK_MEMBER,
    AssetUnavailableError,
    BlazePoseAssets,
    ensure_blazepose_assets,
)

OFFLINE = {"allow_download": False, "use_installed": False}


def _fake_wheel(directory: Path, name: str = "mediapipe-0.10.21-cp311-none-any.whl") -> Path:
    wheel = directory / name
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(LANDMARK_MEMBER, b"landmark-bytes")
        archive.writestr(DETECTOR_MEMBER, b"detector-bytes")
        archive.writestr("mediapipe/__init__.py", b"")
    return wheel


def test_files_already_in_cache_are_used(tmp_path):
    (tmp_path / "pose_landmark_full.tflite").write_bytes(b"L")
    (tmp_path / "pose_detection.tflite").write_bytes(b"D")
    assets = ensure_blazepose_assets(tmp_path, **OFFLINE)
    assert assets == BlazePoseAssets(tmp_path / "pose_landmark_full.tflite",
                                     tmp_path / "pose_detection.tflite")


def test_members_are_extracted_from_a_wheel_in_the_cache(tmp_path):
    _fake_wheel(tmp_path)
    assets = ensure_blazepose_assets(tmp_path, **OFFLINE)
    assert assets.landmark_tflite.read_bytes() == b"landmark-bytes"
    assert assets.detector_tflite.read_bytes() == b"detector-bytes"
    assert assets.landmark_tflite.parent == tmp_path
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    # second call: served from the extracted files even without the wheel
    next(tmp_path.glob("*.whl")).unlink()
    assert ensure_blazepose_assets(tmp_path, **OFFLINE) == assets


def test_files_are_copied_from_an_installed_distribution(tmp_path, monkeypatch):
    site = tmp_path / "site"
    for member, content in ((LANDMARK_MEMBER, b"installed-L"), (DETECTOR_MEMBER, b"installed-D")):
        (site / member).parent.mkdir(parents=True, exist_ok=True)
        (site / member).write_bytes(content)
    (site / "mediapipe" / "__init__.py").write_text("raise ImportError('must not be imported')")
    info = site / "mediapipe-0.10.21.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mediapipe\nVersion: 0.10.21\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    cache = tmp_path / "cache"
    assets = ensure_blazepose_assets(cache, allow_download=False)
    assert assets.landmark_tflite.read_bytes() == b"installed-L"
    assert assets.detector_tflite.read_bytes() == b"installed-D"
    assert "mediapipe" not in sys.modules


def test_a_clear_error_names_what_was_tried_and_the_fix(tmp_path):
    with pytest.raises(AssetUnavailableError) as caught:
        ensure_blazepose_assets(tmp_path / "empty", **OFFLINE)
    message = str(caught.value)
    assert "mediapipe-0.10.21" in message
    assert str(tmp_path / "empty") in message
    assert "pose_landmark_full.tflite" in message and "pose_detection.tflite" in message
    assert "pip download: disabled" in message


def test_a_broken_wheel_is_reported(tmp_path):
    (tmp_path / "mediapipe-0.10.21-cp311-none-any.whl").write_bytes(b"not a zip")
    with pytest.raises(AssetUnavailableError, match="cannot extract"):
        ensure_blazepose_assets(tmp_path, **OFFLINE)


def test_a_wheel_without_the_members_is_reported(tmp_path):
    with zipfile.ZipFile(tmp_path / "mediapipe-0.10.21-cp311-none-any.whl", "w") as archive:
        archive.writestr("mediapipe/__init__.py", b"")
    with pytest.raises(AssetUnavailableError, match="cannot extract"):
        ensure_blazepose_assets(tmp_path, **OFFLINE)


def test_real_assets_are_tflite_flatbuffers(blazepose_assets):
    for path in (blazepose_assets.landmark_tflite, blazepose_assets.detector_tflite):
        assert path.read_bytes()[4:8] == b"TFL3"
