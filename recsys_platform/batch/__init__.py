"""Batch domain, pure code: the training-data contract, the source, the engines, the checks, the seed."""
