# The two commands of the README, and the test tiers (tests/conftest.py marks every test with one).
.PHONY: demo test lint bench setup check typecheck test-unit test-integration test-e2e test-faults

PYTEST = .venv/bin/python -m pytest -p no:warnings -q
# Modules mypy still reports errors in (see pyproject [tool.mypy]); `make check` leaves them out until
# they are typed. Empty this list to type-check everything.
MYPY_PENDING =
empty :=
MYPY_EXCLUDE = ^($(subst $(empty) $(empty),|,$(strip $(MYPY_PENDING:.py=))))\.py$$

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/services.sh
	.venv/bin/qunguard demo --console

test: setup
	bash scripts/test-services.sh
	$(PYTEST) --durations=10

lint: setup
	.venv/bin/ruff check .

# Type-check pipeline/, agents/, schemas/ except MYPY_PENDING (imported modules are read, not reported).
typecheck: setup
	.venv/bin/mypy --follow-imports=silent $(if $(strip $(MYPY_PENDING)),--exclude '$(MYPY_EXCLUDE)')

# Fast and service-free: ruff, mypy, the unit tier.
check: lint typecheck
	$(PYTEST) -m unit

# One tier each; exit code 5 (no test in the tier) is not a failure.
test-unit: setup
	$(PYTEST) -m unit || [ $$? -eq 5 ]

test-integration test-e2e test-faults: test-%: setup
	bash scripts/test-services.sh
	$(PYTEST) -m $* || [ $$? -eq 5 ]

bench: setup
	.venv/bin/python bench/bench_pipeline.py
