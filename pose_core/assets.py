"""Locate the BlazePose ``.tflite`` files shipped inside the ``mediapipe`` wheel.

Sources, in order:

1. the two files already in ``cache_dir`` (``pose_landmark_full.tflite``,
   ``pose_detection.tflite``);
2. an installed ``mediapipe`` distribution (found through its metadata, never imported);
3. a ``mediapipe-0.10.21-*.whl`` already in ``cache_dir``;
4. ``python -m pip download --no-deps mediapipe==0.10.21`` into ``cache_dir``.

Files are copied into ``cache_dir`` atomically (temporary file + rename).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MEDIAPIPE_VERSION = "0.10.21"
LANDMARK_MEMBER = "mediapipe/modules/pose_landmark/pose_landmark_full.tflite"
DETECTOR_MEMBER = "mediapipe/modules/pose_detection/pose_detection.tflite"
PIP_DOWNLOAD_TIMEOUT_S = 600.0


class AssetUnavailableError(RuntimeError):
    """The BlazePose files could not be found or fetched."""


@dataclass(frozen=True)
class BlazePoseAssets:
    """Paths of the two BlazePose model files (inside the cache directory)."""

    landmark_tflite: Path
    detector_tflite: Path


_MEMBERS = {LANDMARK_MEMBER: "landmark_tflite", DETECTOR_MEMBER: "detector_tflite"}


def _cached_paths(cache_dir: Path) -> BlazePoseAssets:
    return BlazePoseAssets(
        landmark_tflite=cache_dir / Path(LANDMARK_MEMBER).name,
        detector_tflite=cache_dir / Path(DETECTOR_MEMBER).name,
    )


def _is_complete(assets: BlazePoseAssets) -> bool:
    return all(p.is_file() and p.stat().st_size > 0 for p in (assets.landmark_tflite,
                                                                assets.detector_tflite))


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _copy_atomically(source: Path, target: Path) -> None:
    _write_atomically(target, source.read_bytes())


def _installed_mediapipe_files() -> dict[str, Path] | None:
    """Paths of the two members in an installed ``mediapipe`` distribution, without importing it."""
    found: dict[str, Path] = {}
    try:
        dist = importlib.metadata.distribution("mediapipe")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for member in _MEMBERS:
            candidate = Path(str(dist.locate_file(member)))
            if candidate.is_file():
                found[member] = candidate
    if len(found) < len(_MEMBERS):
        spec = importlib.util.find_spec("mediapipe")
        roots = list(spec.submodule_search_locations or []) if spec is not None else []
        for root in roots:
            for member in _MEMBERS:
                candidate = Path(root).parent / member
                if candidate.is_file():
                    found.setdefault(member, candidate)
    return found if len(found) == len(_MEMBERS) else None


def _wheels_in(cache_dir: Path) -> Iterator[Path]:
    yield from sorted(cache_dir.glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))


def extract_from_wheel(wheel: Path, cache_dir: Path) -> BlazePoseAssets:
    """Copy the two ``.tflite`` members of a mediapipe wheel (a zip file) into ``cache_dir``."""
    assets = _cached_paths(cache_dir)
    try:
        with zipfile.ZipFile(wheel) as archive:
            for member, field_name in _MEMBERS.items():
                _write_atomically(getattr(assets, field_name), archive.read(member))
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise AssetUnavailableError(f"cannot extract BlazePose files from {wheel}: {exc}") from exc
    return assets


def _pip_download(cache_dir: Path, timeout_s: float) -> str | None:
    """Download the wheel with pip; returns None on success, else the reason of the failure."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps",
               f"mediapipe=={MEDIAPIPE_VERSION}", "-d", str(cache_dir)]
    logger.info("downloading the mediapipe wheel: %s", " ".join(command))
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                                   check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if completed.returncode != 0:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
        return f"pip exited with {completed.returncode}: {' | '.join(tail)}"
    return None


def ensure_blazepose_assets(cache_dir: Path, *, allow_download: bool = True,
                            use_installed: bool = True,
                            download_timeout_s: float = PIP_DOWNLOAD_TIMEOUT_S) -> BlazePoseAssets:
    """Return the BlazePose landmark and detector files, copied into ``cache_dir``.

    Raises:
        AssetUnavailableError: no source worked; the message lists what was tried.
    """
    cache_dir = Path(cache_dir)
    assets = _cached_paths(cache_dir)
    if _is_complete(assets):
        return assets
    tried = [f"files in {cache_dir}: missing"]

    installed = _installed_mediapipe_files() if use_installed else None
    if installed is not None:
        logger.info("copying BlazePose files from the installed mediapipe distribution")
        for member, field_name in _MEMBERS.items():
            _copy_atomically(installed[member], getattr(assets, field_name))
        return assets
    tried.append("installed mediapipe distribution: " +
                 ("not found" if use_installed else "not consulted"))

    for wheel in _wheels_in(cache_dir):
        try:
            return extract_from_wheel(wheel, cache_dir)
        except AssetUnavailableError as exc:
            tried.append(str(exc))
    tried.append(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl in {cache_dir}: none usable")

    if allow_download:
        cache_dir.mkdir(parents=True, exist_ok=True)
        failure = _pip_download(cache_dir, download_timeout_s)
        if failure is None:
            for wheel in _wheels_in(cache_dir):
                return extract_from_wheel(wheel, cache_dir)
            failure = "pip reported success but no wheel appeared"
        tried.append(f"pip download mediapipe=={MEDIAPIPE_VERSION}: {failure}")
    else:
        tried.append("pip download: disabled")

    raise AssetUnavailableError(
        "BlazePose model files are unavailable. Tried: " + "; ".join(tried) + ". Fix: place "
        f"mediapipe-{MEDIAPIPE_VERSION}-<platform>.whl (from PyPI) or the two files "
        f"{Path(LANDMARK_MEMBER).name} and {Path(DETECTOR_MEMBER).name} in {cache_dir}."
    )

