"""Deployable artifacts: the Glue job entry point and reproducible packaging for infra/."""
