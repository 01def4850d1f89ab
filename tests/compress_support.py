"""Helpers of the compression / evaluation job tests: the tiny BlazePose-shaped GraphModel
stored as a version with its torch form, and the labelled dev subset as a dataset zip."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

from service_support import TEST_DATA

from model_store import Store
from tests.compression_tiny import tiny_pose_model


def dev_subset_zip() -> bytes:
    """The labelled photos of tests/data/dev_subset as a dataset zip."""
    folder = TEST_DATA / "dev_subset"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(folder / "annotations.json", "annotations.json")
        for image in sorted((folder / "images").iterdir()):
            archive.write(image, f"images/{image.name}")
    return buffer.getvalue()


def post_dev_subset(client: Any) -> str:
    """Upload :func:`dev_subset_zip` through ``client`` (a TestClient or httpx client); its id."""
    response = client.post("/datasets", files={"file": ("dev.zip", dev_subset_zip())})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def export_tiny_graph_model(folder: Path) -> dict[str, Path]:
    """The tiny BlazePose-shaped GraphModel's files by role: ``model`` (ONNX), ``recipe``,
    ``weights``."""
    from pose_core.export import export_onnx
    from pose_core.models.graph import save_graph_model

    model = tiny_pose_model()
    recipe, weights = save_graph_model(model, folder)
    onnx = export_onnx(model, folder / "model.onnx", (1, 3, 256, 256))
    return {"model": onnx, "recipe": recipe, "weights": weights}


def store_version_1(store: Store, name: str, files: dict[str, Path]) -> int:
    pending = store.models.create_pending_version(
        name, format="onnx", manifest={"kind": "blazepose"}
    )
    return store.models.finalize_version(name, pending.number, files).number
