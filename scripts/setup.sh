#!/usr/bin/env bash
# Installs what the platform and its tests need: Python packages always; with --services, the
# MariaDB server and its JDBC driver from Debian (root only, skipped when already present).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [[ "${1:-}" == "--services" ]]; then
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

echo "setup: installing the Python packages (pip install -e '.[dev]')"
"$PYTHON" -m pip install -q --disable-pip-version-check -e '.[dev]'
