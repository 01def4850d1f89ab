"""The page's routes without a browser: ``/`` redirects to ``/ui``, every file the page
refers to is served from the package, nothing else is, and the skeleton is pose_core's."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_support import REPO_ROOT, assert_error_shape

from app.api.routes.ui import STATIC_FILES
from app.main import create_app
from common.settings import Settings
from pose_core.keypoints import COCO17_NAMES, COCO17_SKELETON


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    # the page's routes need no store or broker: the app's lifespan is not entered
    return TestClient(create_app(Settings(data_dir=tmp_path)))


def test_root_redirects_to_the_page(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/ui"
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<title>posecompress</title>" in page.text


def test_the_page_refers_only_to_its_own_static_files(client: TestClient) -> None:
    html = client.get("/ui").text
    referenced = re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', html)
    assert sorted(referenced) == sorted(
        f"/ui/static/{n}" for n in STATIC_FILES if n != "index.html"
    )
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html)  # no CDN
    for path in referenced:
        response = client.get(path)
        assert response.status_code == 200, path
        name = path.rsplit("/", 1)[1]
        assert response.headers["content-type"] == STATIC_FILES[name]
        assert response.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize("name", ["missing.js", "..%2F__init__.py", "%2e%2e%2fsettings.py"])
def test_nothing_else_is_served(client: TestClient, name: str) -> None:
    response = client.get(f"/ui/static/{name}")
    assert response.status_code == 404
    assert_error_shape(response.json(), "not_found")


def test_skeleton_is_the_one_pose_core_defines(client: TestClient) -> None:
    body = client.get("/ui/skeleton.json").json()
    assert body["keypoints"] == list(COCO17_NAMES)
    assert [tuple(limb) for limb in body["limbs"]] == list(COCO17_SKELETON)


@pytest.mark.slow
def test_a_built_wheel_carries_the_page(tmp_path: Path) -> None:
    """A non-editable install gets the static files too (package data in pyproject)."""
    source = tmp_path / "source"  # a copy: building in place would leave build/ in the repo
    for name in ("pyproject.toml", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / name, source / name)
    for package in ("app", "common", "workers", "model_store", "pose_core"):
        shutil.copytree(
            REPO_ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), "."],
        cwd=source,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("posecompress-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"app/ui/static/{name}" for name in STATIC_FILES} <= names
