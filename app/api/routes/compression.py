"""Compression and evaluation jobs of a version, its report, and the comparison table:

- ``POST /models/{name}/versions/{v}/compress`` (recipe checked before queueing)
- ``POST /models/{name}/versions/{v}/evaluate``
- ``GET /models/{name}/versions/{v}/report``
- ``POST /models/{name}/versions/{v}/optimize``
- ``GET /models/{name}/compare?versions=1,2,3`` / ``?job=<optimize job>``
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from app.api.deps import CeleryDep, SettingsDep, StoreDep
from app.api.routes.versions import find_version
from app.errors import ApiError
from app.jobs import accepted, enqueue_job
from app.report_table import compare_rows
from app.schemas import (
    BODY_ERRORS,
    CompareRow,
    CompareTable,
    CompressRequest,
    ErrorResponse,
    EvaluateRequest,
    JobPublic,
    OptimizeRequest,
)
from common.jobs import COMPRESS, EVALUATE, OPTIMIZE
from common.params import CompressParams, EvaluateParams, EvaluationModeName, OptimizeParams
from common.settings import Settings
from model_store import Store, VersionInfo
from model_store.lineage import served_version
from pose_core.manifest_kinds import KIND_BLAZEPOSE, SERVABLE_KINDS
from pose_core.roles import TORCH_ROLES

if TYPE_CHECKING:
    from pose_core.compression.configs import MethodConfig

router = APIRouter(
    prefix="/models/{name}",
    tags=["compression"],
    responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
)



def validate_recipe(
    steps: list[dict[str, Any]],
    parent: VersionInfo,
    settings: Settings,
    kind: str = KIND_BLAZEPOSE,
) -> list[dict[str, Any]]:
    """Typed configs of every step (as JSON), or 422 naming the step and the problem. Training
    steps and time budgets are bounded by the settings. ``kind``: the parent's manifest kind
    (an uploaded heatmap / SimCC ONNX model gets its torch form from onnx2torch)."""
    from pydantic import ValidationError

    from pose_core.compression.base import UnknownMethodError
    from pose_core.compression.configs import MAX_TRAINING_STEPS, MAX_TRAINING_TIME_S
    from pose_core.compression.registry import (
        known_methods,
        onnx_methods,
        parse_config,
        torch_needed_at,
    )

    limits = {
        MAX_TRAINING_STEPS: settings.max_training_steps,
        MAX_TRAINING_TIME_S: settings.soft_time_limit,
    }
    configs = []
    for index, step in enumerate(steps):
        try:
            configs.append(parse_config(step, limits))
        except UnknownMethodError as exc:
            raise ApiError(
                422,
                "unknown_method",
                f"recipe step {index}: {exc}",
                {"step": index, "known_methods": known_methods()},
            ) from exc
        except ValidationError as exc:
            errors = jsonable_encoder(exc.errors(include_url=False, include_context=False))
            raise ApiError(
                422,
                "invalid_recipe",
                f"recipe step {index} ({step.get('method')}): {exc.error_count()} invalid field(s)",
                {"step": index, "errors": errors},
            ) from exc
    if kind != KIND_BLAZEPOSE:
        _check_generic_steps(configs, kind)
    torch_form = {a.role for a in parent.artifacts} >= TORCH_ROLES or kind != KIND_BLAZEPOSE
    needed = torch_needed_at(configs, torch_form)
    if needed is not None:
        index, onnx_only_from = needed
        reason = (
            f"step {onnx_only_from} ({configs[onnx_only_from].method}) yields an ONNX graph"
            if torch_form or onnx_only_from > 0
            else f"{parent.model} v{parent.number} has no torch form (recipe + weights)"
        )
        raise ApiError(
            422,
            "unsupported_recipe",
            f"recipe step {index} ({configs[index].method}) needs a torch model but {reason}; "
            f"only {onnx_methods()} can run on ONNX",
            {"step": index},
        )
    return [c.model_dump(mode="json") for c in configs]


def _check_generic_steps(configs: list[MethodConfig], kind: str) -> None:
    """422 unless every step can run on the torch form of a ``kind`` (heatmap / SimCC) ONNX
    upload: no step reads BlazePose landmarks, and onnx2torch is installed when one needs
    torch (an accepted job must be able to run)."""
    from pose_core.importers.onnx_torch import ONNX2TORCH_INSTALL, onnx2torch_available

    for index, config in enumerate(configs):
        if config.landmark_only():
            raise ApiError(
                422,
                "unsupported_recipe",
                f"recipe step {index} ({config.method}): {', '.join(config.landmark_only())} "
                f"read BlazePose landmarks; a {kind!r} model takes prune (magnitude, uniform), "
                "lowrank and distill",
                {"step": index},
            )
    torch_steps = [i for i, c in enumerate(configs) if not c.runs_on_onnx]
    if torch_steps and not onnx2torch_available():
        index = torch_steps[0]
        raise ApiError(
            422,
            "unsupported_recipe",
            f"recipe step {index} ({configs[index].method}) needs the torch form of this "
            f"{kind!r} ONNX model, which needs onnx2torch on the worker: {ONNX2TORCH_INSTALL}",
            {"step": index, "install": ONNX2TORCH_INSTALL},
        )


def require_kind(store: Store, version: VersionInfo, *kinds: str) -> str:
    """The version's pose manifest kind (through its lineage), or 422 unless it is one of
    ``kinds``: a job on any other model would be accepted and then fail."""
    kind = served_version(store, version).manifest.get("kind")  # NotServableError: 422
    if kind not in kinds:
        raise ApiError(
            422,
            "unsupported_model",
            f"{version.model} v{version.number} is a {kind!r} model; this job needs "
            f"{' or '.join(repr(k) for k in kinds)}",
        )
    return str(kind)


@router.post(
    "/versions/{ref}/compress",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    responses={**BODY_ERRORS, 422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)
def start_compression(
    name: str,
    ref: str,
    body: CompressRequest,
    store: StoreDep,
    celery: CeleryDep,
    settings: SettingsDep,
) -> JSONResponse:
    """Start a ``compress`` job: run ``recipe`` on this version with crops of ``dataset``,
    store the result as a new version (each step's with ``keep_intermediate``) with its
    report. Every step is validated first (422 with the known methods or the field errors).
    A heatmap or SimCC upload takes prune, lowrank and distill (on its onnx2torch form).
    Poll ``Location``."""
    parent = store.models.resolve(name, ref)
    kind = require_kind(store, parent, *SERVABLE_KINDS)
    recipe = validate_recipe(body.recipe, parent, settings, kind)
    for dataset in body.dataset_ids:
        store.datasets.get(dataset)
    if body.eval_dataset is not None:
        store.datasets.get(body.eval_dataset)
    params = CompressParams(
        model=name, version=parent.number, **{**body.model_dump(), "recipe": recipe}
    )
    return accepted(enqueue_job(store, celery, COMPRESS, params))


@router.post(
    "/versions/{ref}/optimize",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    responses={**BODY_ERRORS, 422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)
def start_optimization(
    name: str,
    ref: str,
    body: OptimizeRequest,
    store: StoreDep,
    celery: CeleryDep,
    settings: SettingsDep,
) -> JSONResponse:
    """Start an ``optimize`` job: try FP16, INT8, prune, lowrank and their INT8 chains within
    ``time_budget_s``, each measured against this version; store the Pareto-optimal ones that
    meet the accuracy target as versions and recommend one. The table: ``GET
    /models/{name}/compare?job=<job id>``. Poll ``Location``."""
    parent = store.models.resolve(name, ref)
    require_kind(store, parent, KIND_BLAZEPOSE)
    if body.time_budget_s > settings.soft_time_limit:
        raise ApiError(
            422,
            "invalid_argument",
            f"time_budget_s: at most {settings.soft_time_limit} s on this service "
            "(TASK_TIME_LIMIT less 60 s)",
        )
    for dataset in body.dataset_ids:
        store.datasets.get(dataset)
    if body.eval_dataset is not None:
        evaluation = store.datasets.get(body.eval_dataset)
        if body.max_ap_loss is not None and not evaluation.has_annotations:
            raise ApiError(
                422, "unlabelled_dataset", f"max_ap_loss: dataset {evaluation.id} has no labels"
            )
    params = OptimizeParams(model=name, version=parent.number, **body.model_dump())
    return accepted(enqueue_job(store, celery, OPTIMIZE, params))


@router.post(
    "/versions/{ref}/evaluate",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    responses={**BODY_ERRORS, 422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)
def start_evaluation(
    name: str, ref: str, body: EvaluateRequest, store: StoreDep, celery: CeleryDep
) -> JSONResponse:
    """Start an ``evaluate`` job: COCO AP / PCK of this version on a labelled dataset in
    ground-truth-box or detector mode, attached to the version's report under
    ``evaluation.<dataset id>.<mode>``. Poll ``Location``."""
    version = store.models.resolve(name, ref)
    require_kind(store, version, *SERVABLE_KINDS)
    dataset = store.datasets.get(body.dataset)
    if not dataset.has_annotations:
        raise ApiError(422, "unlabelled_dataset", f"dataset {dataset.id} has no annotations")
    mode: EvaluationModeName = "gt-boxes" if body.mode in ("gt_boxes", "gt-boxes") else "detector"
    params = EvaluateParams(model=name, version=version.number, dataset=dataset.id, mode=mode)
    return accepted(enqueue_job(store, celery, EVALUATE, params))


@router.get("/versions/{ref}/report", response_model=dict[str, Any])
def get_report(name: str, ref: str, store: StoreDep) -> dict[str, Any]:
    """The version's report (compression measurements, evaluations); 404 if it has none."""
    version = find_version(store, name, ref)
    if not version.report:
        raise ApiError(404, "not_found", f"{name} v{version.number} has no report")
    return version.report


@router.get("/compare", response_model=CompareTable)
def compare_versions(
    name: str,
    store: StoreDep,
    versions: Annotated[
        str | None, Query(description="comma-separated versions, e.g. 1,2,3")
    ] = None,
    job: Annotated[
        str | None, Query(description="an optimize job: its Pareto table and stored versions")
    ] = None,
) -> CompareTable:
    """Every report field of each version, flattened, with ratios to the first listed; with
    ``job``, the optimize job's candidate table (``pareto``) and, unless ``versions`` says
    otherwise, its source version and the versions it stored."""
    pareto = _optimize_table(store, name, job) if job else None
    refs = [v.strip() for v in (versions or "").split(",") if v.strip()]
    if not refs and pareto is not None:
        stored = [c["version"] for c in pareto["candidates"] if c.get("version")]
        refs = [str(v) for v in [pareto["parent"]["version"], *stored]]
    if not refs:
        raise ApiError(422, "invalid_argument", "versions: give at least one version (or job)")
    found = [find_version(store, name, ref) for ref in refs]
    columns, rows = compare_rows([(v.number, v.report) for v in found])
    return CompareTable(
        model=name,
        baseline=found[0].number,
        columns=columns,
        rows=[CompareRow(version=n, fields=f, ratios=r) for n, f, r in rows],
        pareto=pareto,
    )


def _optimize_table(store: Any, name: str, job_id: str) -> dict[str, Any]:
    """The table an optimize job wrote into its source version's report."""
    job = store.jobs.get(job_id)
    if job.kind != OPTIMIZE or job.params.get("model") != name:
        raise ApiError(404, "not_found", f"job {job_id} is not an optimize job of {name}")
    source = store.models.get_version(name, int(job.params["version"]))
    table = (source.report or {}).get("optimize", {}).get(job_id)
    if table is None:
        raise ApiError(409, "conflict", f"optimize job {job_id} is {job.status}: no table yet")
    return dict(table)
