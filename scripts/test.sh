#!/usr/bin/env bash
# Run ruff, mypy and the whole test suite with the checkout's .venv (after
# scripts/setup.sh).
# pytest's exit 5 ("no tests collected") is a failure here: a run that tests
# nothing must never pass. Each test has its own deadline (tests/deadline.py);
# the whole run has VMGAHP_SUITE_DEADLINE seconds (SIGINT: pytest still
# prints its summary).
set -uo pipefail
cd "$(dirname "$0")/.."
# Lint and type-check first (configured in pyproject.toml); a failure fails
# the run, but the tests still run so that one run shows both.
lint=0
.venv/bin/python -m ruff check || lint=1
.venv/bin/python -m mypy || lint=1
timeout --signal=INT --kill-after=60 "${VMGAHP_SUITE_DEADLINE:-3000}" .venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests - failing" >&2
  exit 1
fi
if [ "$lint" -ne 0 ] && [ "$rc" -eq 0 ]; then
  echo "test.sh: ruff or mypy failed - failing" >&2
  exit 1
fi
exit "$rc"
