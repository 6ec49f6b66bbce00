"""pgvector's text literal `[0.0123,-0.441,...]`: the embeddings CSVs' format and the query parameter form."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def vector_literal(vector: Sequence[float]) -> str:
    """pgvector's text form: [0.0123,-0.441,...] (the shortest text that round-trips a float32)."""
    return "[" + ",".join(str(np.float32(v)) for v in vector) + "]"


def parse_vector(text: str, dim: int | None = None, where: str = "") -> np.ndarray:
    """A float32 vector from its literal; ValueError naming `where` if it is malformed,
    has another dimension than `dim`, or holds NaN or infinity."""
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        raise ValueError(f"{where}: not a vector literal: {text[:40]!r}")
    try:
        v = np.array([float(x) for x in text[1:-1].split(",")], dtype=np.float32)
    except ValueError:
        raise ValueError(f"{where}: not numbers: {text[:40]!r}") from None
    if dim is not None and len(v) != dim:
        raise ValueError(f"{where}: dimension {len(v)}, expected {dim}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{where}: holds NaN or infinity")
    return v
