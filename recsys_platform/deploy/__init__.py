"""Deployment: the Glue job entry point and its local launcher, reproducible packaging for infra/, the production Dagster instance (serve-dagster)."""
