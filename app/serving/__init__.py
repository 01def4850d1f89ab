"""Serving keypoints: image decoding, the per-version pose pipeline (ONNX Runtime sessions
in one bounded cache) and the built-in model import."""
