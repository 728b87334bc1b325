#!/usr/bin/env bash
# What the test suite needs besides Python: Debian's clickhouse-server, Chromium with chromedriver and
# a CJK font (the console's browser tests), and the Kafka jars from Maven Central (cached in
# ~/.cache/qunguard). The tests start the servers themselves, on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v clickhouse-server >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1 \
    || [ ! -e /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clickhouse-server clickhouse-client \
    chromium chromium-driver fonts-wqy-zenhei >/dev/null
fi
.venv/bin/python -c "from pipeline.devtools.devservices import kafka_libs; print('kafka jars:', kafka_libs())"
