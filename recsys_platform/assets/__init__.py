"""Dagster definitions by domain: batch, ml, vectors, streaming."""
