"""Response bodies of ``POST /predict`` and ``POST /predict/batch``."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.schemas import ErrorBody
from app.serving.predictor import Prediction
from pose_core.keypoints import COCO17_NAMES


class KeypointPublic(BaseModel):
    name: str
    x: float
    y: float
    score: float


class PersonPublic(BaseModel):
    bbox: list[float] = Field(description="[x, y, w, h] in image pixels")
    score: float
    keypoints: list[KeypointPublic] = Field(description="17 COCO keypoints, COCO order")


class ImageSize(BaseModel):
    width: int
    height: int


class PredictionPublic(BaseModel):
    model: str
    version: int
    image: ImageSize
    people: list[PersonPublic]

    @classmethod
    def of(cls, prediction: Prediction) -> PredictionPublic:
        people = [
            PersonPublic(
                bbox=[round(float(v), 2) for v in person.bbox],
                score=round(float(person.score), 4),
                keypoints=[
                    KeypointPublic(
                        name=name,
                        x=round(float(x), 2),
                        y=round(float(y), 2),
                        score=round(float(s), 4),
                    )
                    for name, (x, y, s) in zip(COCO17_NAMES, person.keypoints.tolist(), strict=True)
                ],
            )
            for person in prediction.people
        ]
        return cls(
            model=prediction.model,
            version=prediction.version,
            image=ImageSize(width=prediction.width, height=prediction.height),
            people=people,
        )


class BatchItem(BaseModel):
    index: int
    filename: str | None = None
    image: ImageSize | None = None
    people: list[PersonPublic] | None = None
    error: ErrorBody | None = None


class BatchPredictionPublic(BaseModel):
    model: str
    version: int
    results: list[BatchItem]
