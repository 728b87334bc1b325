#!/usr/bin/env bash
# Debian's clickhouse-server (the console demo, the tests) and the Kafka jars from Maven Central
# (cached in ~/.cache/qunguard). Nothing is started here: the demo and the tests start them.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
want=""
command -v clickhouse-server >/dev/null 2>&1 || want="clickhouse-server clickhouse-client"
if [ "${1:-}" = "--browser" ]; then  # the console's browser tests: Chromium, chromedriver, a CJK font
  command -v chromedriver >/dev/null 2>&1 || want="$want chromium chromium-driver"
  [ -e /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ] || want="$want fonts-wqy-zenhei"
fi
if [ -n "$want" ]; then
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $want >/dev/null
fi
.venv/bin/python -c "from pipeline.devtools.devservices import kafka_libs; print('kafka jars:', kafka_libs())"
