"""Skeleton overlays for ``format=png`` responses."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from pose_core.inference.types import PersonPose
from pose_core.keypoints import COCO17_SKELETON

LIMB_COLOUR = (0, 255, 0)
POINT_COLOUR = (255, 64, 0)
BOX_COLOUR = (255, 255, 0)


def draw_people(
    image: Image.Image, people: Sequence[PersonPose], min_keypoint_score: float = 0.5
) -> Image.Image:
    """A copy of ``image`` (RGB) with each person's box, limbs and keypoints drawn; keypoints
    below ``min_keypoint_score`` and their limbs are left out."""
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 300))
    for person in people:
        x, y, w, h = person.bbox
        draw.rectangle((x, y, x + w, y + h), outline=BOX_COLOUR, width=max(1, width // 2))
        points = person.keypoints
        visible = points[:, 2] >= min_keypoint_score
        for a, b in COCO17_SKELETON:
            if visible[a] and visible[b]:
                draw.line(
                    (
                        float(points[a, 0]),
                        float(points[a, 1]),
                        float(points[b, 0]),
                        float(points[b, 1]),
                    ),
                    fill=LIMB_COLOUR,
                    width=width,
                )
        radius = width * 1.5
        for px, py, _ in points[visible]:
            draw.ellipse((px - radius, py - radius, px + radius, py + radius), fill=POINT_COLOUR)
    return canvas
