# The two commands of the README.
.PHONY: demo test lint bench setup

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/qunguard demo

test: setup
	bash scripts/test-services.sh
	.venv/bin/python -m pytest -p no:warnings -q --durations=10

lint: setup
	.venv/bin/ruff check .

bench: setup
	.venv/bin/python bench/bench_pipeline.py
