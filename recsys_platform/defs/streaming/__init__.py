"""Streaming domain: `recommendations_sensor` and the hourly `recommendations` asset."""

from recsys_platform.defs.streaming.assets import RECS_KEY, build_streaming_defs

__all__ = ["RECS_KEY", "build_streaming_defs"]
