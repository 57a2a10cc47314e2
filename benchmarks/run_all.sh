#!/usr/bin/env bash
# Run every benchmark in sequence (each prints its own figures and writes
# benchmarks/out/<name>.json), then print the summary table.
#
#   benchmarks/run_all.sh                 # from the repo root
#   benchmarks/run_all.sh --write-readme  # also refresh the table in benchmarks/README.md
#
# About 8 minutes on 2 cores. A benchmark that crashes is reported and the others still run.
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
failed=()
for name in extraction channel_memory payload rerun browser load explain featvis atlas; do
    echo
    echo "################ benchmarks/bench_${name}.py ################"
    start=$(date +%s)
    if ! "$PY" "benchmarks/bench_${name}.py"; then
        failed+=("bench_${name}.py")
    fi
    echo "(bench_${name}.py took $(( $(date +%s) - start )) s)"
done
echo
echo "################ summary ################"
"$PY" benchmarks/report.py "$@"
if (( ${#failed[@]} )); then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
