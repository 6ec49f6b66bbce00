"""Terraform 1.0.3 offline: the binary scripts/setup.sh --infra installs and the provider mirror."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import REPO, _missing

TOOLS = REPO / ".tools"
MIRROR = Path(os.environ.get("RECSYS_TF_PLUGIN_MIRROR", "/opt/tf-plugins"))


def tool(path: Path, what: str) -> Path:
    if not path.exists():
        _missing(f"{what} not found at {path}: run scripts/setup.sh --infra")
    return path


def terraform_env(work: Path) -> dict[str, str]:
    """Environment for `terraform` that installs providers from the offline mirror only."""
    if not MIRROR.exists():
        _missing(f"no provider mirror at {MIRROR}: terraform init cannot run offline")
    config = work / "terraformrc"
    config.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{MIRROR}"\n  }}\n}}\n')
    return {**os.environ, "TF_CLI_CONFIG_FILE": str(config), "TF_DATA_DIR": str(work / "data"),
            "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}


def terraform(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    binary = tool(TOOLS / "terraform", "Terraform 1.0.3")
    return subprocess.run([str(binary), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
