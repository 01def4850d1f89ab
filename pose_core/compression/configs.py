"""Every built-in compression method's config: frozen, strict, JSON round-trippable, torch-free.

The API validates recipes with these before queueing a job, so this module must not import
torch, ONNX or numpy; the handlers that use them live in the method modules
(:mod:`~pose_core.compression.quantize`, ``prune``, ``lowrank``, ``distill``).
"""

from __future__ import annotations

from typing import ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

Calibrator = Literal["minmax", "percentile", "entropy"]

#: Validation-context keys that bound a step's training; the API passes its settings
#: (``parse_config(step, context={...})``), so an accepted job fits the service's time limit.
MAX_TRAINING_STEPS, MAX_TRAINING_TIME_S = "max_training_steps", "max_training_time_s"


_Bounded = TypeVar("_Bounded", int, float | None)


def _within_limit(value: _Bounded, info: ValidationInfo, key: str) -> _Bounded:
    limit = (info.context or {}).get(key)
    if value is not None and limit is not None and value > limit:
        raise ValueError(f"at most {limit} on this service ({key})")
    return value


class Budget(BaseModel):
    """What a step's result may cost against its input, measured after the step on held-out
    crops (crops of images that no step trained or calibrated on); ``None`` = not checked.

    Defaults: lossless results pass, a model that lost most of its AP cannot (the measurements:
    docs/compression-results.md, "Why the defaults").
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: mean COCO-17 keypoint distance to the input model's predictions, crop pixels (of 256)
    max_mean_px: float | None = Field(default=4.0, gt=0)
    #: mean OKS of the result's keypoints against the input model's (1 = identical)
    min_oks_vs_parent: float | None = Field(default=0.9, ge=0, le=1)
    #: median per-round latency ratio to the input model (ONNX Runtime, batch 1): never slower
    max_latency_ratio: float | None = Field(default=1.0, gt=0)
    #: added to ``max_latency_ratio`` when checking (or the measured noise, when larger: the
    #: parent against itself in the same rounds): the ratio of identical kernels wanders
    latency_tolerance: float = Field(default=0.05, ge=0)
    #: ``fail``: the job fails with the measured numbers; ``keep``: the result is stored,
    #: marked over budget, and never promoted
    on_over_budget: Literal["fail", "keep"] = "fail"


class MethodConfig(BaseModel):
    """Base of every method's config: frozen, strict, JSON round-trippable.

    Subclasses set ``method`` as a ``Literal`` default (e.g. ``method: Literal["prune"] = "prune"``)
    and add their own fields with defaults.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: the method runs on an ONNX graph (an ONNX-only version, or the output of a step that
    #: yields one); the others need a torch model (a version's ``recipe`` + ``weights``)
    runs_on_onnx: ClassVar[bool] = False

    method: str
    config_version: int = 1
    budget: Budget = Budget()

    def landmark_only(self) -> tuple[str, ...]:
        """What of this step reads BlazePose's landmark outputs, so cannot run on a heatmap or
        SimCC model (empty: the step runs on any pose model's torch form)."""
        return ()


class RecoveryConfig(BaseModel):
    """Training settings of a distillation run (standalone or recovery after prune/lowrank/QAT)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int = Field(default=300, ge=0)
    time_budget_s: float | None = Field(default=None, gt=0)
    batch_size: int = Field(default=8, ge=1)
    #: the middle of the rates that improved held-out fidelity (docs: "Why the defaults")
    lr: float = Field(default=1e-5, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    landmark_weight: float = 1.0
    aux_weight: float = 0.1
    z_weight: float = 0.05
    logit_weight: float = 1.0
    presence_weight: float = 1.0
    #: the heatmap output (64 x 64 x 39), per-channel normalised MSE
    heatmap_weight: float = 0.0
    #: the block outputs (residual adds) of a GraphModel, per-channel normalised MSE
    #: (:mod:`~pose_core.compression.features`)
    feature_weight: float = Field(default=0.0, ge=0)
    gt_weight: float = 0.0
    smooth_l1_beta_px: float = 2.0
    #: a fresh random affine (rotation, scale, shift, flip) and colour jitter of every batch,
    #: with the teacher run on the same augmented crops (label-free only: ignored when
    #: ``gt_weight`` > 0): the fixed crops alone are memorised
    online_augment: bool = True
    checkpoint_every: int = Field(default=50, ge=1)
    seed: int = 0
    warmup_steps: int = Field(default=20, ge=0)
    #: crops held out of training (the last ones, at most a quarter), scored before training and
    #: every ``eval_every`` steps: the best-scoring weights are kept, the starting ones if
    #: training never helped (a short, CPU-starved run must never return a worse model)
    #: (48 every 50 steps: 16 every 25 stopped long recoveries early; docs: "Why the defaults")
    guard_crops: int = Field(default=48, ge=0)
    eval_every: int = Field(default=50, ge=1)
    #: held-out scores in a row without a new best before training stops (0: never); the
    #: best weights are kept either way, so later steps would only spend time
    patience: int = Field(default=8, ge=0)

    @field_validator("steps")
    @classmethod
    def _steps_limit(cls, value: int, info: ValidationInfo) -> int:
        return _within_limit(value, info, MAX_TRAINING_STEPS)

    @field_validator("time_budget_s")
    @classmethod
    def _time_limit(cls, value: float | None, info: ValidationInfo) -> float | None:
        return _within_limit(value, info, MAX_TRAINING_TIME_S)


class TargetSearch(BaseModel):
    """Bisection on a global target (prune: MACs ratio, lowrank: params ratio) for the most
    compression whose fast proxy -- held-out fidelity after the refit, before recovery -- is
    within the step's budget; the real recovery and the real budget check follow at the
    target found."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lowest: float = Field(default=0.4, gt=0, lt=1)  #: the most compression tried
    highest: float = Field(default=0.95, gt=0, lt=1)  #: the least; over budget here = fail
    probes: int = Field(default=4, ge=1, le=12)

    @model_validator(mode="after")
    def _ordered(self) -> TargetSearch:
        if self.lowest >= self.highest:
            raise ValueError("lowest must be below highest")
        return self


def _check_searchable(config: MethodConfig, targets: tuple[float | None, ...]) -> None:
    if sum(t is not None for t in targets) > 1:
        raise ValueError("set at most one target")
    if all(t is None for t in targets) and (
        config.budget.max_mean_px is None and config.budget.min_oks_vs_parent is None
    ):
        raise ValueError(
            "without a target the step searches one within budget: "
            "budget.max_mean_px or budget.min_oks_vs_parent is needed"
        )


class DistillConfig(MethodConfig, RecoveryConfig):
    """Distillation from the teacher (``data.teacher``, default the parent) into the model."""

    method: Literal["distill"] = "distill"


class QuantizeConfig(MethodConfig):
    """Config of one quantization step (frozen, JSON round-trippable)."""

    runs_on_onnx: ClassVar[bool] = True

    method: Literal["quantize"] = "quantize"
    mode: Literal["int8_static", "fp16_weights"] = "int8_static"
    calibrator: Calibrator = "percentile"
    #: the clip that kept the most held-out AP of those tried (docs: "Why the defaults")
    percentile: float = Field(99.9, gt=50.0, le=100.0)
    num_bins: int = Field(2048, ge=128)
    num_calibration_crops: int = Field(256, ge=1)
    num_holdout_crops: int = Field(32, ge=1)
    per_channel: bool = True
    #: lift weak channels of ReLU/ReLU6 outputs read by depthwise convs to the tensor's range
    #: before calibrating (:mod:`~pose_core.compression.quantize_equalize`; docs: "Why the
    #: defaults")
    equalize_activations: bool = True
    #: INT8 nodes go back to fp32, most harmful first, until the mean landmark error meets
    #: ``budget.max_mean_px`` -- at most this many, and never past ``budget.max_latency_ratio``
    max_fp32_nodes: int = Field(16, ge=0)
    #: quantization-aware fine-tuning steps under ONNX Runtime's own scales (0 = post-training
    #: only; :mod:`~pose_core.compression.quantize_qat`); skipped, and reported so, when the
    #: step's input has no torch graph form; kept only if it lowers the held-out error
    qat_steps: int = Field(0, ge=0)
    qat_batch_size: int = Field(8, ge=1)
    #: the recovery's rate (docs: "Why the defaults")
    qat_learning_rate: float = Field(1e-5, gt=0.0)
    sensitivity_top_k: int = Field(10, ge=0)

    @field_validator("qat_steps")
    @classmethod
    def _steps_limit(cls, value: int, info: ValidationInfo) -> int:
        return _within_limit(value, info, MAX_TRAINING_STEPS)

    def landmark_only(self) -> tuple[str, ...]:
        # calibration fallback and QAT are scored by the landmark error
        return ("method 'quantize'",)


class PruneConfig(MethodConfig):
    """Prune ``ratio`` of the channels of every prunable group, or until ``target_macs_ratio``;
    with neither, the lowest MACs ratio that stays within budget (``search``)."""

    method: Literal["prune"] = "prune"
    ratio: float | None = Field(default=None, gt=0, lt=1)
    target_macs_ratio: float | None = Field(default=None, gt=0, lt=1)
    importance: Literal["magnitude", "taylor"] = "magnitude"
    #: ``all``: every prunable channel group; ``block_internal``: only channels private to one
    #: block (an inverted residual's expanded channels: expand conv out, depthwise, project conv
    #: in), never the channels residual adds couple across blocks (kept about twice the AP of
    #: ``all`` on BlazePose-Full; without residual adds both are the same)
    scope: Literal["all", "block_internal"] = "block_internal"
    global_pruning: bool = False
    #: per-group share of the pruning: ``uniform`` (one ratio everywhere) or ``sensitivity``
    #: (least where silencing half a group's channels moves the landmarks most, measured on
    #: ``sensitivity_crops`` crops; needs ``target_macs_ratio``)
    allocation: Literal["uniform", "sensitivity"] = "uniform"
    sensitivity_crops: int = Field(default=16, ge=1)
    #: keep channel counts multiples of this: ONNX Runtime's blocked conv kernels want 8 or 16
    #: (unrounded pruning was no faster than the parent)
    round_to: int | None = Field(default=8, ge=1)
    #: module-name prefixes never pruned (the output heads are always kept, whatever this says)
    ignored_layers: tuple[str, ...] = ()
    taylor_batches: int = Field(default=4, ge=1)
    #: least-squares refit of every 1x1 conv to the parent's features before recovery
    refit: bool = True
    refit_crops: int = Field(default=64, ge=1)
    recovery: RecoveryConfig = RecoveryConfig()
    search: TargetSearch = TargetSearch()

    @model_validator(mode="after")
    def _one_target(self) -> PruneConfig:
        _check_searchable(self, (self.ratio, self.target_macs_ratio))
        return self

    def landmark_only(self) -> tuple[str, ...]:
        return tuple(
            setting
            for setting, used in (
                ("importance 'taylor'", self.importance == "taylor"),
                ("allocation 'sensitivity'", self.allocation == "sensitivity"),
            )
            if used
        )


class LowRankConfig(MethodConfig):
    """Factorize layers keeping ``energy`` of each spectrum, or to fit ``params_ratio``; with
    neither, the lowest params ratio that stays within budget (``search``)."""

    method: Literal["lowrank"] = "lowrank"
    energy: float | None = Field(default=None, gt=0, le=1)
    params_ratio: float | None = Field(default=None, gt=0, lt=1)
    min_saving: float = Field(default=0.1, ge=0, lt=1)
    #: ranks rounded up to a multiple of this (ONNX Runtime's conv kernels prefer 8 / 16)
    round_to: int = Field(default=8, ge=1)
    tucker_kxk: bool = True
    #: output basis and rank spectrum of each factorization: the weights' SVD, or the
    #: eigenvectors of the layer's output second moment on ``refit_crops`` crops (activations:
    #: closer to the parent on held-out photos and dev)
    basis: Literal["weights", "activations"] = "activations"
    ignored_layers: tuple[str, ...] = ()  #: module-name prefixes left alone
    #: least-squares refit of the factorized layers (and every dense conv) to the parent's features
    refit: bool = True
    refit_crops: int = Field(default=64, ge=1)
    recovery: RecoveryConfig = RecoveryConfig()
    search: TargetSearch = TargetSearch()

    @model_validator(mode="after")
    def _one_target(self) -> LowRankConfig:
        _check_searchable(self, (self.energy, self.params_ratio))
        return self


#: method name -> config class of every built-in method
BUILTIN_CONFIGS: dict[str, type[MethodConfig]] = {
    config.model_fields["method"].default: config
    for config in (QuantizeConfig, PruneConfig, LowRankConfig, DistillConfig)
}
