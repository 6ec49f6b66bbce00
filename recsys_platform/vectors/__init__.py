"""Vectors domain, pure code: pgvector tables per model version behind switched views, the embedded server."""
