#!/usr/bin/env bash
# What the test suite needs besides Python: Debian's clickhouse-server and the Kafka jars from Maven
# Central (cached in ~/.cache/qunguard). The tests start both themselves, on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v clickhouse-server >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
fi
.venv/bin/python -c "from pipeline.devtools.devservices import kafka_libs; print('kafka jars:', kafka_libs())"
