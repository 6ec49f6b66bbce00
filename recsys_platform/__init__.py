"""recsys-platform: a Dagster-orchestrated data platform that serves product recommendations."""

__version__ = "0.1.0"
