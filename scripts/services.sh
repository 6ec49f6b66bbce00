#!/usr/bin/env bash
# Starts (or stops) the real servers the tests use, on loopback, with state under .services/:
#   - MariaDB on 127.0.0.1:${RECSYS_TEST_MYSQL_PORT:-33306}, database classicmodels, user recsys
#   - moto's S3/Kinesis-compatible HTTP server on 127.0.0.1:${RECSYS_TEST_S3_PORT:-5055}
#   - a second moto server on 127.0.0.1:${RECSYS_TEST_AWS_PORT:-5056}: the AWS account that
#     tests/test_infra_apply.py applies infra/ to with Terraform (reset by that test, so the
#     first server's buckets are never touched)
# Writes .services/env with the variables the tests read; `source .services/env` to use them.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${RECSYS_SERVICES_DIR:-$PWD/.services}
MYSQL_PORT=${RECSYS_TEST_MYSQL_PORT:-33306}
S3_PORT=${RECSYS_TEST_S3_PORT:-5055}
AWS_PORT=${RECSYS_TEST_AWS_PORT:-5056}
PYTHON=${PYTHON:-python3}
# A random test-only password, made once per state folder, never committed.
mkdir -p "$STATE"
[[ -f "$STATE/mysql-password" ]] || head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$STATE/mysql-password"
MYSQL_PASSWORD=$(cat "$STATE/mysql-password")

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS > deadline )); then echo "services: $what did not come up; see $STATE/*.log" >&2; return 1; fi
    sleep 0.3
  done
}

start_mariadb() {
  local data="$STATE/mariadb" sock="$STATE/mariadb/mariadb.sock"
  if [[ -S "$sock" ]] && mariadb-admin --socket="$sock" -uroot ping >/dev/null 2>&1; then
    echo "services: MariaDB already running on port $MYSQL_PORT"; return
  fi
  if [[ ! -d "$data/mysql" ]]; then
    mkdir -p "$data"
    chown -R mysql:mysql "$data" 2>/dev/null || true
    mariadb-install-db --datadir="$data" --user="$(id -un | sed 's/^root$/mysql/')" \
      --auth-root-authentication-method=socket >"$STATE/mariadb-install.log" 2>&1
  fi
  chown -R mysql:mysql "$data" 2>/dev/null || true
  local user_opt=(); [[ $(id -u) -eq 0 ]] && user_opt=(--user=mysql)
  nohup mariadbd --no-defaults --datadir="$data" --socket="$sock" --port="$MYSQL_PORT" \
    --bind-address=127.0.0.1 --pid-file="$data/mariadb.pid" --skip-log-bin \
    --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=2 --max-allowed-packet=64M \
    "${user_opt[@]}" >"$STATE/mariadb.log" 2>&1 &
  wait_for 60 "MariaDB" mariadb-admin --socket="$sock" -uroot ping
  mariadb --socket="$sock" -uroot <<SQL
CREATE DATABASE IF NOT EXISTS classicmodels;
CREATE USER IF NOT EXISTS 'recsys'@'127.0.0.1' IDENTIFIED BY '$MYSQL_PASSWORD';
CREATE USER IF NOT EXISTS 'recsys'@'localhost' IDENTIFIED BY '$MYSQL_PASSWORD';
ALTER USER 'recsys'@'127.0.0.1' IDENTIFIED BY '$MYSQL_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO 'recsys'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'recsys'@'localhost';
FLUSH PRIVILEGES;
SQL
  echo "services: MariaDB up on 127.0.0.1:$MYSQL_PORT"
}

start_moto() {  # start_moto NAME PORT WHAT
  local name=$1 port=$2 what=$3
  if curl -fs "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1; then
    echo "services: moto ($what) already running on port $port"; return
  fi
  nohup "$PYTHON" -m moto.server -H 127.0.0.1 -p "$port" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
  wait_for 30 "moto server ($what)" curl -fs "http://127.0.0.1:$port/moto-api/"
  echo "services: moto ($what) up on http://127.0.0.1:$port"
}

write_env() {
  cat >"$STATE/env" <<ENV
export RECSYS_TEST_MYSQL_URL='mysql+pymysql://recsys:$MYSQL_PASSWORD@127.0.0.1:$MYSQL_PORT/classicmodels'
export RECSYS_TEST_MYSQL_SOCKET='$STATE/mariadb/mariadb.sock'
export RECSYS_TEST_S3_ENDPOINT='http://127.0.0.1:$S3_PORT'
export RECSYS_TEST_AWS_ENDPOINT='http://127.0.0.1:$AWS_PORT'
export RECSYS_TEST_JDBC_JAR='/usr/share/java/mariadb-java-client.jar'
ENV
}

stop_all() {
  if [[ -f "$STATE/mariadb/mariadb.pid" ]]; then kill "$(cat "$STATE/mariadb/mariadb.pid")" 2>/dev/null || true; fi
  for name in moto moto-aws; do
    if [[ -f "$STATE/$name.pid" ]]; then kill "$(cat "$STATE/$name.pid")" 2>/dev/null || true; rm -f "$STATE/$name.pid"; fi
  done
  echo "services: stopped"
}

case "${1:-start}" in
  start) start_mariadb; start_moto moto "$S3_PORT" "S3/Kinesis API"; start_moto moto-aws "$AWS_PORT" "AWS account for Terraform"; write_env; echo "services: variables in $STATE/env" ;;
  stop) stop_all ;;
  *) echo "usage: scripts/services.sh [start|stop]" >&2; exit 2 ;;
esac
