"""The package's layers, checked by import-linter against the contracts in pyproject.toml.

The contracts are run on the real tree, and on copies with one planted violation each, so each
contract is shown to fail when its rule is broken (a check that cannot fail checks nothing).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _lint(root: Path) -> subprocess.CompletedProcess:
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--no-cache"], cwd=root, capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)})


def test_the_tree_keeps_every_layer_contract():
    run = _lint(REPO)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "6 kept, 0 broken" in run.stdout


@pytest.mark.parametrize(("module", "planted", "contract"), [
    ("recsys_platform/ml/hybrid.py", "import dagster", "Pure domain code never imports Dagster"),
    ("recsys_platform/batch/checks.py", "import pyspark", "Only the Spark engine imports Spark"),
    ("lambdas/model_inference/handler.py", "import recsys_platform.assets", "Lambdas import no Dagster"),
    ("recsys_platform/streaming/events.py", "import lambdas.model_inference.handler", "Nothing in the package imports"),
    ("recsys_platform/vectors/store.py", "import recsys_platform.assets.vectors", "Layers: entry points >"),
    ("recsys_platform/batch/source.py", "import recsys_platform.batch.engines.spark", "No import cycle between sibling"),
])
def test_a_planted_violation_breaks_its_contract(tmp_path, module, planted, contract):
    root = tmp_path / "tree"
    root.mkdir()
    shutil.copy(REPO / "pyproject.toml", root)
    for package in ("recsys_platform", "lambdas"):
        shutil.copytree(REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    with (root / module).open("a") as f:
        f.write(f"\n{planted}  # planted by the test\n")
    run = _lint(root)
    assert run.returncode != 0
    broken = [line for line in run.stdout.splitlines() if line.rstrip().endswith("BROKEN")]
    assert any(contract in line for line in broken), run.stdout[-3000:]


# Where the environment may be read: the entry points, and nowhere below them. A child process
# inherits this one's environment (its credentials and PATH) where the platform starts one.
ENVIRONMENT_READERS = {
    "recsys_platform/settings.py": "Settings.from_env: the one parse",
    "recsys_platform/cli/demo.py": "sets Dagster's own switch while it creates a run",
    "recsys_platform/deploy/dagster_instance.py": "the webserver's and daemon's environment: this one's plus the "
                                                  "settings; on ECS, DAGSTER_HOME and the credentials ECS injects",
    "recsys_platform/deploy/local_glue.py": "the Glue script's process inherits this one's environment, as Glue's role",
    "recsys_platform/batch/engines/spark_config.py": "PYSPARK_PYTHON: the one way to name a local worker's Python",
}


def _reads_environment(path: Path) -> bool:
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb") \
                and isinstance(node.value, ast.Name) and node.value.id == "os":
            return True
    return False


def test_nothing_below_the_entry_points_reads_the_environment():
    readers = {str(p.relative_to(REPO)) for p in (REPO / "recsys_platform").rglob("*.py") if _reads_environment(p)}
    lambdas = {str(p.relative_to(REPO)) for p in (REPO / "lambdas").rglob("*.py") if _reads_environment(p)}
    assert readers == set(ENVIRONMENT_READERS), readers ^ set(ENVIRONMENT_READERS)
    assert lambdas == {"lambdas/model_inference/handler.py", "lambdas/stream_transformation/handler.py"}
