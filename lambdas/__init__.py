"""The platform's AWS Lambda entry points: thin adapters over `recsys_platform.streaming` (nothing in the package imports them)."""
