#!/usr/bin/env bash
# What the test suite needs besides Python: Debian's clickhouse-server, Chromium with chromedriver and
# a CJK font (the console's browser tests), and the Kafka jars from Maven Central. The tests start
# the servers themselves, on loopback.
set -euo pipefail
exec bash "$(dirname "$0")/services.sh" --browser
