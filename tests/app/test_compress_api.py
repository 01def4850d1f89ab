"""The compression / evaluation API surface that answers before any worker runs: recipe
validation (422), unknown datasets (404), the report and the comparison table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from compress_support import export_tiny_graph_model, post_dev_subset, store_version_1
from fastapi.testclient import TestClient
from service_support import assert_error_shape, dataset_zip

PRUNE_STEP = {"method": "prune", "ratio": 0.3, "recovery": {"steps": 2, "batch_size": 2}}


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return export_tiny_graph_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def tiny(client: TestClient, tiny_files: dict[str, Path]) -> str:
    store_version_1(client.app.state.store, "tiny", tiny_files)  # type: ignore[attr-defined]
    return "tiny"


@pytest.fixture
def dataset_id(client: TestClient) -> str:
    return post_dev_subset(client)


def _compress(client: TestClient, recipe: list[dict[str, Any]], dataset: str, **extra: Any) -> Any:
    return client.post(
        "/models/tiny/versions/1/compress", json={"recipe": recipe, "dataset": dataset, **extra}
    )


def test_compress_answers_202_with_a_job_and_its_location(
    client: TestClient, tiny: str, dataset_id: str
) -> None:
    response = _compress(client, [PRUNE_STEP], dataset_id, eval_dataset=dataset_id)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['job_id']}"
    assert job["kind"] == "compress" and job["status"] == "queued"
    step = job["params"]["recipe"][0]
    assert step["method"] == "prune" and step["ratio"] == 0.3
    assert step["recovery"]["steps"] == 2  # the typed config, defaults filled in
    assert "importance" in step
    assert job["params"]["version"] == 1 and job["params"]["eval_dataset"] == dataset_id


def test_unknown_method_is_422_listing_the_known_ones(
    client: TestClient, tiny: str, dataset_id: str
) -> None:
    response = _compress(client, [PRUNE_STEP, {"method": "sparsify"}], dataset_id)
    assert response.status_code == 422
    body = response.json()
    assert_error_shape(body, "unknown_method")
    assert body["error"]["detail"]["step"] == 1
    assert {"quantize", "prune", "lowrank", "distill"} <= set(
        body["error"]["detail"]["known_methods"]
    )
    assert client.get("/jobs").json() == []


@pytest.mark.parametrize(
    ("step", "field"),
    [
        ({"method": "prune", "ratio": 1.5}, "ratio"),
        ({"method": "lowrank", "no_such_field": 1}, "no_such_field"),
        ({"method": "quantize", "calibrator": "magic"}, "calibrator"),
    ],
)
def test_bad_config_is_422_with_the_field_errors(
    client: TestClient, tiny: str, dataset_id: str, step: dict[str, Any], field: str
) -> None:
    response = _compress(client, [step], dataset_id)
    assert response.status_code == 422
    body = response.json()
    assert_error_shape(body, "invalid_recipe")
    assert body["error"]["detail"]["step"] == 0
    assert any(field in err["loc"] for err in body["error"]["detail"]["errors"])


def test_torch_steps_after_int8_or_on_onnx_only_versions_are_422(
    client: TestClient, tiny: str, dataset_id: str, tiny_files: dict[str, Path]
) -> None:
    after_int8 = _compress(client, [{"method": "quantize"}, PRUNE_STEP], dataset_id)
    assert after_int8.status_code == 422
    assert_error_shape(after_int8.json(), "unsupported_recipe")
    assert "step 0 (quantize)" in after_int8.json()["error"]["message"]

    store = client.app.state.store  # type: ignore[attr-defined]
    store_version_1(store, "graphless", {"model": tiny_files["model"]})
    onnx_only = client.post(
        "/models/graphless/versions/1/compress",
        json={"recipe": [PRUNE_STEP], "dataset": dataset_id},
    )
    assert onnx_only.status_code == 422
    assert "no torch form" in onnx_only.json()["error"]["message"]
    quantize = client.post(
        "/models/graphless/versions/1/compress",
        json={"recipe": [{"method": "quantize"}], "dataset": dataset_id},
    )
    assert quantize.status_code == 202, quantize.text


def test_unknown_dataset_model_or_version_is_404(
    client: TestClient, tiny: str, dataset_id: str
) -> None:
    missing_dataset = _compress(client, [PRUNE_STEP], "no-such-dataset")
    assert missing_dataset.status_code == 404
    assert_error_shape(missing_dataset.json(), "not_found")
    missing_eval = _compress(client, [PRUNE_STEP], dataset_id, eval_dataset="nope")
    assert missing_eval.status_code == 404
    body = {"recipe": [PRUNE_STEP], "dataset": dataset_id}
    assert client.post("/models/nope/versions/1/compress", json=body).status_code == 404
    assert client.post("/models/tiny/versions/9/compress", json=body).status_code == 404
    assert client.get("/jobs").json() == []


def test_evaluate_needs_a_labelled_dataset(client: TestClient, tiny: str, dataset_id: str) -> None:
    unlabelled = client.post(
        "/datasets", files={"file": ("u.zip", dataset_zip(with_annotations=False))}
    ).json()["id"]
    response = client.post(
        "/models/tiny/versions/1/evaluate", json={"dataset": unlabelled, "mode": "gt_boxes"}
    )
    assert response.status_code == 422
    assert_error_shape(response.json(), "unlabelled_dataset")
    bad_mode = client.post(
        "/models/tiny/versions/1/evaluate", json={"dataset": dataset_id, "mode": "oracle"}
    )
    assert bad_mode.status_code == 422
    started = client.post(
        "/models/tiny/versions/1/evaluate", json={"dataset": dataset_id, "mode": "gt_boxes"}
    )
    assert started.status_code == 202
    assert started.json()["params"]["mode"] == "gt-boxes"


def test_report_and_compare_table(client: TestClient, tiny: str, tmp_path: Path) -> None:
    store = client.app.state.store  # type: ignore[attr-defined]
    assert client.get("/models/tiny/versions/1/report").status_code == 404
    source = tmp_path / "m.onnx"
    source.write_bytes(b"not read by the table")
    for params, latency in ((500, 4.0), (250, 3.0)):
        pending = store.models.create_pending_version("tiny", format="onnx", parent=1)
        interval = {"low": 0.1, "high": params / 1000, "level": 0.95, "unit": "person"}
        store.models.finalize_version(
            "tiny",
            pending.number,
            {"model": source},
            report={
                "params": params,
                "latency_ms": {"p50": latency},
                "method": "prune",
                "accuracy": {"ap": 0.2, "ap_ci": interval},
            },
        )
    report = client.get("/models/tiny/versions/3/report")
    assert report.status_code == 200
    assert report.json()["latency_ms"] == {"p50": 3.0}

    table = client.get("/models/tiny/compare", params={"versions": "2,3,1"})
    assert table.status_code == 200, table.text
    body = table.json()
    assert body["baseline"] == 2
    assert [row["version"] for row in body["rows"]] == [2, 3, 1]
    assert {"params", "latency_ms.p50", "method"} <= set(body["columns"])
    second = body["rows"][1]
    assert second["fields"]["latency_ms.p50"] == 3.0
    assert second["ratios"]["params"] == pytest.approx(0.5)
    assert second["ratios"]["latency_ms.p50"] == pytest.approx(0.75)
    assert "method" not in second["ratios"]
    # an AP interval is a readable column besides its numbers
    assert second["fields"]["accuracy.ap_ci"] == "[0.100, 0.250]"
    assert second["fields"]["accuracy.ap_ci.high"] == 0.25
    assert body["rows"][2]["fields"] == {} and body["rows"][2]["ratios"] == {}
    assert client.get("/models/tiny/compare", params={"versions": "2,7"}).status_code == 404
    assert client.get("/models/tiny/compare", params={"versions": ","}).status_code == 422


@pytest.mark.parametrize(
    "change",
    [
        {"seed": -1},
        {"seed": 2**64},
        {"recipe": [{**PRUNE_STEP, "recovery": {"steps": 10**9}}]},
        {"recipe": [{**PRUNE_STEP, "recovery": {"time_budget_s": 10**9}}]},
        {"recipe": [{"method": "distill", "steps": 10**9}]},
        {"recipe": [{"method": "quantize", "qat_steps": 10**9}]},
        {"recipe": [{"method": "lowrank", "recovery": {"steps": 20_001}}]},
    ],
    ids=[
        "seed-negative",
        "seed-huge",
        "prune-steps",
        "prune-time",
        "distill-steps",
        "qat-steps",
        "lowrank-steps",
    ],
)
def test_jobs_that_could_not_finish_are_refused_before_queueing(
    client: TestClient, tiny: str, dataset_id: str, change: dict[str, Any]
) -> None:
    body = {"recipe": [PRUNE_STEP], "dataset": dataset_id, **change}
    response = client.post("/models/tiny/versions/1/compress", json=body)
    assert response.status_code == 422, response.text
    assert client.get("/jobs").json() == []


def test_training_bounds_follow_the_settings(make_client: Any, tiny_files: dict[str, Path]) -> None:
    client = make_client(max_training_steps=50, task_time_limit=600)
    store_version_1(client.app.state.store, "tiny", tiny_files)
    dataset = post_dev_subset(client)

    def compress(recovery: dict[str, Any]) -> Any:
        step = {**PRUNE_STEP, "recovery": recovery}
        return _compress(client, [step], dataset)

    assert compress({"steps": 50}).status_code == 202
    too_many = compress({"steps": 51})
    assert too_many.status_code == 422
    assert_error_shape(too_many.json(), "invalid_recipe")
    assert "max_training_steps" in str(too_many.json()["error"]["detail"])
    assert compress({"steps": 10, "time_budget_s": 540}).status_code == 202
    assert compress({"steps": 10, "time_budget_s": 541}).status_code == 422


def test_jobs_on_models_that_are_not_blazepose_are_refused(
    client: TestClient, dataset_id: str, tiny_files: dict[str, Path]
) -> None:
    store = client.app.state.store  # type: ignore[attr-defined]
    files = {"model": tiny_files["model"]}
    for name, manifest in (
        ("plain", None),
        ("heat", {"kind": "heatmap", "input_size": [256, 256]}),
    ):
        pending = store.models.create_pending_version(name, format="onnx", manifest=manifest)
        store.models.finalize_version(name, pending.number, files)
    body = {"recipe": [{"method": "quantize"}], "dataset": dataset_id}
    plain = client.post("/models/plain/versions/1/compress", json=body)
    assert plain.status_code == 422
    assert_error_shape(plain.json(), "not_servable")
    heat = client.post("/models/heat/versions/1/compress", json=body)
    assert heat.status_code == 422  # a heatmap model takes prune / lowrank / distill only
    assert_error_shape(heat.json(), "unsupported_recipe")
    assert "method 'quantize'" in heat.json()["error"]["message"]
    evaluate = client.post("/models/plain/versions/1/evaluate", json={"dataset": dataset_id})
    assert evaluate.status_code == 422
    optimize = client.post(
        "/models/heat/versions/1/optimize", json={"dataset": dataset_id, "min_oks_vs_parent": 0.9}
    )
    assert optimize.status_code == 422
    assert_error_shape(optimize.json(), "unsupported_model")
    assert client.get("/jobs").json() == []


def test_default_prune_and_lowrank_steps_search_a_target_and_carry_a_budget(
    client: TestClient, tiny: str, dataset_id: str
) -> None:
    response = _compress(client, [{"method": "prune"}, {"method": "lowrank"}], dataset_id)
    assert response.status_code == 202, response.text
    prune, lowrank = response.json()["params"]["recipe"]
    assert prune["ratio"] is None and prune["target_macs_ratio"] is None
    assert lowrank["params_ratio"] is None and lowrank["energy"] is None
    assert prune["budget"]["on_over_budget"] == "fail"
    assert prune["budget"]["max_latency_ratio"] == 1.0

    no_limit = {"max_mean_px": None, "min_oks_vs_parent": None}
    refused = _compress(client, [{"method": "prune", "budget": no_limit}], dataset_id)
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "invalid_recipe"
    assert "searches one within budget" in str(refused.json()["error"]["detail"])


def test_optimize_needs_one_target_and_a_labelled_set_for_ap(
    client: TestClient, tiny: str, dataset_id: str
) -> None:
    url = "/models/tiny/versions/1/optimize"
    for body in (
        {"dataset": dataset_id},
        {"dataset": dataset_id, "min_oks_vs_parent": 0.9, "max_ap_loss": 0.02},
        {"dataset": dataset_id, "max_ap_loss": 0.02},  # no eval_dataset
    ):
        refused = client.post(url, json=body)
        assert refused.status_code == 422, body
        assert_error_shape(refused.json(), "validation_error")
    unlabelled = client.post(
        "/datasets", files={"file": ("u.zip", dataset_zip(with_annotations=False))}
    )
    refused = client.post(
        url,
        json={"dataset": dataset_id, "eval_dataset": unlabelled.json()["id"], "max_ap_loss": 0.02},
    )
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "unlabelled_dataset"
    started = client.post(url, json={"dataset": dataset_id, "min_oks_vs_parent": 0.9})
    assert started.status_code == 202, started.text
    assert started.json()["kind"] == "optimize"
    assert started.json()["params"]["time_budget_s"] == 1800

    table = client.get("/models/tiny/compare", params={"job": started.json()["id"]})
    assert table.status_code == 409  # the job has not written its table yet
    assert client.get("/models/tiny/compare").status_code == 422


def test_optimize_time_budget_fits_the_time_limit(
    client: TestClient, tiny: str, dataset_id: str
) -> None:
    body = {"dataset": dataset_id, "min_oks_vs_parent": 0.9, "time_budget_s": 3 * 3600}
    refused = client.post("/models/tiny/versions/1/optimize", json=body)
    assert refused.status_code == 422
    assert_error_shape(refused.json(), "invalid_argument")
    assert client.get("/jobs").json() == []


def test_several_training_datasets_are_checked_and_kept_in_order(
    client: TestClient, tiny: str, dataset_id: str
) -> None:
    other = client.post("/datasets", files={"file": ("e.zip", dataset_zip())})
    assert other.status_code == 201, other.text
    both = [dataset_id, other.json()["id"]]
    response = _compress(client, [PRUNE_STEP], both)  # type: ignore[arg-type]
    assert response.status_code == 202, response.text
    assert response.json()["params"]["dataset"] == both
    missing = _compress(client, [PRUNE_STEP], [dataset_id, "nope"])  # type: ignore[arg-type]
    assert missing.status_code == 404
    for bad in ([dataset_id, dataset_id], [], [f"d{i}" for i in range(9)]):
        refused = _compress(client, [PRUNE_STEP], bad)  # type: ignore[arg-type]
        assert refused.status_code == 422, bad
        assert_error_shape(refused.json(), "validation_error")
