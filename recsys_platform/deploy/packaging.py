"""`recsys-platform package`: reproducible Lambda zips and the Glue job's script and package.

Zips hold the code only (no Dagster): the handlers and exactly the `recsys_platform` modules they
import, found by walking the entry points' imports (so the list cannot drift from the code);
entries sorted, timestamps fixed, permissions normalised, so the same source gives the same bytes.
`dist/lambda-src/` is the same tree for the Lambda container image (infra/lambda.Dockerfile), which
adds the third-party libraries of infra/lambda-requirements.txt (numpy, psycopg, boto3, FastAPI,
Mangum: what serving imports); `image_packages` reports their installed size.
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
LAMBDAS = {
    "model_inference": "lambdas/model_inference/handler.py",
    "stream_transformation": "lambdas/stream_transformation/handler.py",
}
GLUE_ENTRY = "recsys_platform/deploy/glue_job.py"
LAMBDA_REQUIREMENTS = ROOT / "infra" / "lambda-requirements.txt"


def _module_file(module: str) -> str | None:
    """The repository path of a first-party module (a package's __init__.py), or None."""
    if module.split(".")[0] not in ("recsys_platform", "lambdas"):
        return None
    base = ROOT / module.replace(".", "/")
    if (base / "__init__.py").exists():
        return f"{module.replace('.', '/')}/__init__.py"
    if base.with_suffix(".py").exists():
        return f"{module.replace('.', '/')}.py"
    return None


def _imports(path: str) -> set[str]:
    """Every first-party module a file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text(), path)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from pkg import module`
    return {m for m in found if _module_file(m)}


def closure(*entries: str) -> list[str]:
    """The entry files and every first-party file they need: imported modules and their packages."""
    todo, files = list(entries), set()
    while todo:
        path = todo.pop()
        if path in files:
            continue
        files.add(path)
        parts = Path(path).parent.parts
        todo += [f"{'/'.join(parts[:n])}/__init__.py" for n in range(1, len(parts) + 1)
                 if (ROOT / Path(*parts[:n]) / "__init__.py").exists()]
        todo += [_module_file(m) for m in _imports(path)]
    return sorted(files)


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
    """Writes dist/lambda/<name>.zip, dist/lambda-src/, dist/glue/ratings_ml_training.py and recsys_platform.zip."""
    out = Path(out)
    digests = {}
    # The container image's source tree (infra/lambda.Dockerfile copies it): both handlers and their code.
    src = out / "lambda-src"
    shutil.rmtree(src, ignore_errors=True)
    for name in closure(*LAMBDAS.values()):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, src / name)
    for name, entry in LAMBDAS.items():
        digests[f"lambda/{name}.zip"] = _zip(out / "lambda" / f"{name}.zip", {f: ROOT / f for f in closure(entry)})
    glue = out / "glue"
    glue.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / GLUE_ENTRY, glue / "ratings_ml_training.py")
    digests["glue/ratings_ml_training.py"] = hashlib.sha256((glue / "ratings_ml_training.py").read_bytes()).hexdigest()
    digests["glue/recsys_platform.zip"] = _zip(glue / "recsys_platform.zip",
                                               {f: ROOT / f for f in closure(GLUE_ENTRY) if f != GLUE_ENTRY})
    return digests


def code_zip(out: str | Path) -> Path:
    """Build the artifacts into `out` and return the package zip (the Glue job's --extra-py-files,
    and what a Spark cluster's executors import: `spark.submit.pyFiles`)."""
    build(out)
    return Path(out) / "glue" / "recsys_platform.zip"


def image_packages(requirements: Path = LAMBDA_REQUIREMENTS) -> dict[str, int]:
    """Bytes installed per distribution the Lambda image's requirements pull in (with their
    dependencies and extras), as installed in this environment: what the image's Python packages
    weigh, without building it."""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lines = [line.split("#")[0].strip() for line in requirements.read_text().splitlines()]
    todo = [Requirement(line) for line in lines if line]
    sizes: dict[str, int] = {}
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        dist = metadata.distribution(requirement.name)
        if name not in sizes:  # the files on disk, compiled bytecode included (RECORD gives no size for it)
            sizes[name] = sum(os.path.getsize(p) for p in (dist.locate_file(f) for f in dist.files or [])
                              if os.path.isfile(p))
        for text in dist.requires or []:
            needed = Requirement(text)
            wanted = needed.marker is None or any(needed.marker.evaluate({"extra": e})
                                                  for e in [*requirement.extras, ""])
            if wanted and canonicalize_name(needed.name) not in sizes:
                todo.append(needed)
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1]))
