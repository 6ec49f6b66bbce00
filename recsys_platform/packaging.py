"""`recsys-platform package`: reproducible Lambda zips and the Glue job's script and package.

Zips hold the code only (no Dagster): the handlers and the `recsys_platform.core` modules they
import; entries sorted, timestamps fixed, permissions normalised, so the same source gives the
same bytes. `dist/lambda-src/` is the same tree for the Lambda container image
(infra/lambda.Dockerfile), which adds the third-party libraries (numpy, scikit-learn, pandas,
pyarrow, psycopg, pgvector): together they exceed the 250 MB limit of a zip.
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
LAMBDA_CORE = ["__init__.py", "core/__init__.py", "core/artifacts.py", "core/errors.py", "core/events.py",
               "core/firehose.py", "core/inference.py", "core/model.py", "core/object_store.py",
               "core/vector_store.py"]
LAMBDAS = {
    "model_inference": ["lambdas/__init__.py", "lambdas/model_inference/__init__.py",
                        "lambdas/model_inference/handler.py"],
    "stream_transformation": ["lambdas/__init__.py", "lambdas/stream_transformation/__init__.py",
                              "lambdas/stream_transformation/handler.py",
                              "lambdas/model_inference/__init__.py", "lambdas/model_inference/handler.py"],
}
GLUE_CORE = ["__init__.py", "core/__init__.py", "core/batch.py", "core/errors.py", "core/lake.py",
             "core/object_store.py", "core/source.py", "core/training_data.py"]


def _zip(target: Path, files: dict[str, Path]) -> str:
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, files[name].read_bytes())
    return hashlib.sha256(target.read_bytes()).hexdigest()


def build(out: str | Path) -> dict[str, str]:
    """Writes dist/lambda/<name>.zip, dist/glue/ratings_ml_training.py and recsys_platform.zip."""
    out = Path(out)
    digests = {}
    core = {f"recsys_platform/{p}": ROOT / "recsys_platform" / p for p in LAMBDA_CORE}
    # The container image's source tree (infra/lambda.Dockerfile copies it): both handlers + core.
    src = out / "lambda-src"
    shutil.rmtree(src, ignore_errors=True)
    for name, path in {**core, **{f: ROOT / f for files in LAMBDAS.values() for f in files}}.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, src / name)
    for name, files in LAMBDAS.items():
        digests[f"lambda/{name}.zip"] = _zip(out / "lambda" / f"{name}.zip",
                                             {**core, **{f: ROOT / f for f in files}})
    glue = out / "glue"
    glue.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "recsys_platform" / "glue_entry.py", glue / "ratings_ml_training.py")
    digests["glue/ratings_ml_training.py"] = hashlib.sha256((glue / "ratings_ml_training.py").read_bytes()).hexdigest()
    digests["glue/recsys_platform.zip"] = _zip(glue / "recsys_platform.zip",
                                               {f"recsys_platform/{p}": ROOT / "recsys_platform" / p for p in GLUE_CORE})
    return digests
