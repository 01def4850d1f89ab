"""Photo -> people with 17 COCO keypoints: preprocess -> infer -> postprocess.

Modules (nothing heavy is imported here):

- ``types``: ``Runner`` (NCHW float32 batch -> outputs) and ``PersonPose``.
- ``crop``: rotated crop rectangles and their affine maps.
- ``anchors`` / ``detector``: BlazePose person detector (SSD anchors, decoding, weighted NMS,
  letterbox and tiled detector windows).
- ``roi``: person crop from the detector's alignment keypoints.
- ``landmarks``: BlazePose landmark model (decoding, heatmap refinement, COCO-17 mapping).
- ``heatmap``: bring-your-own top-down heatmap models.
- ``keypoint_model``: the ``KeypointModel`` protocol both implement.
- ``pipeline``: ``PosePipeline`` (whole image or given crops, per-stage timings).
- ``runtime``: ONNX Runtime ``OnnxRunner`` and the ``SessionCache`` LRU; ``litert``: the LiteRT
  reference runner (test/bench dependency).
- ``drawing``: skeleton overlay.
"""
