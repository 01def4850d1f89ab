"""Embedded mode of ``posecompress serve``: a private Redis and child process supervision."""
