"""The typed job params: one model for the API's request and the worker's read of the row."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.schemas import CompressRequest, ExportRequest, OptimizeRequest, TfliteExportRequest
from common.params import (
    CompressParams,
    EvaluateParams,
    ExportParams,
    OptimizeParams,
    TfliteExportParams,
)


def test_rows_stored_before_a_field_existed_load_with_its_default() -> None:
    old = {"model": "m", "version": 2, "dataset": "d", "recipe": [{"method": "quantize"}]}
    params = CompressParams.model_validate(old)
    assert (params.augment_copies, params.seed, params.latency_rounds) == (1, 0, 100)
    assert (params.holdout_fraction, params.keep_intermediate) == (0.2, False)
    assert params.promote is False
    export = ExportParams.model_validate({"model": "m"})
    assert (export.version, export.optimization, export.verify_samples, export.tolerance) == (
        "latest",
        "basic",
        16,
        1e-4,
    )
    tflite = TfliteExportParams.model_validate({"model": "m", "version": 1})
    assert (tflite.precision, tflite.verify_samples, tflite.tolerance) == ("fp32", 8, None)
    assert EvaluateParams.model_validate({"model": "m", "version": 1, "dataset": "d"}).mode == (
        "gt-boxes"
    )


def test_unknown_keys_of_a_row_are_ignored() -> None:
    row = {"model": "m", "version": 1, "dataset": "d", "recipe": [{}], "from_the_future": 1}
    assert "from_the_future" not in CompressParams.model_validate(row).model_dump()


def test_request_bodies_are_the_params_without_the_version() -> None:
    for request, params in [
        (CompressRequest, CompressParams),
        (OptimizeRequest, OptimizeParams),
        (ExportRequest, ExportParams),
        (TfliteExportRequest, TfliteExportParams),
    ]:
        assert set(params.model_fields) == set(request.model_fields) | {"model", "version"}


def test_the_worker_refuses_what_the_api_refuses() -> None:
    with pytest.raises(ValidationError):
        ExportParams.model_validate({"model": "m", "tolerance": -1.0})
    with pytest.raises(ValidationError, match="exactly one"):
        OptimizeParams.model_validate({"model": "m", "version": 1, "dataset": "d"})
