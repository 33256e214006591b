#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, then runs them.
# Usage: tests/run.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

# psql and pgjdbc (with a JDK to run it) for the client tests, a real
# PostgreSQL server for the differential tests, openssl for TLS
# certificates, a real Prometheus Alertmanager for the alert tests, a real
# Prometheus (and promtool) scraping /metrics, Node.js
# for node-postgres.
missing=()
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v java >/dev/null 2>&1 || missing+=(default-jdk-headless)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
[ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
[ -x /usr/bin/prometheus-alertmanager ] || missing+=(prometheus-alertmanager)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Python packages for the reference answers (DuckDB; scipy, numpy and statsmodels
# for the monitoring functions), the event generator, and the Python clients.
python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

# node-postgres, pinned by tests/clients/package-lock.json.
(cd tests/clients && npm ci --silent --no-audit --no-fund)

cargo test --workspace "$@"
