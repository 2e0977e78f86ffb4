#!/usr/bin/env bash
# Settings and helpers shared by bench/run.sh and the section scripts it sources
# (bench/clickhouse.sh, bench/cutover.sh), which also run alone. A setting already made
# (by run.sh) is kept.
ROWS=${ROWS:-${FERRY_BENCH_ROWS:-2000000}}
RUNS=${RUNS:-${FERRY_BENCH_RUNS:-3}}
WORK=${WORK:-${FERRY_BENCH_DIR:-/tmp/ferry-bench}}
FERRYCTL=${FERRYCTL:-${FERRY_BENCH_FERRYCTL:-./target/release/ferryctl}}
CONCURRENCY=${CONCURRENCY:-${FERRY_BENCH_CONCURRENCY:-2}}
now() { date +%s.%N; }
# timed SETUP RUN: runs SETUP (untimed), waits for a quiet machine (when run.sh defined
# `quiet`; a section run alone does not wait) and times RUN, RUNS times; prints the median
# seconds.
timed() {
  local times=() i s e
  for ((i = 0; i < RUNS; i++)); do
    $1 >&2
    if declare -F quiet >/dev/null; then quiet; fi
    s=$(now); $2 >&2; e=$(now)
    times+=("$(python3 -c "print($e - $s)")")
  done
  python3 -c "import statistics, sys; print(statistics.median(map(float, sys.argv[1:])))" "${times[@]}"
}
nothing() { :; }
rate() { python3 -c "print(f'{$ROWS / $1:,.0f}')"; }
ratio() { python3 -c "print(f'{$2 / $1:.2f}')"; }   # ferry seconds, peer seconds: peer time / ferry time
# goal RATIO MIN: the table's goal cell, e.g. "≥ 1.1×: met" ("—" when MIN is empty).
goal() {
  if [ -z "${2:-}" ]; then echo "—"; return; fi
  python3 -c "print(f'≥ {$2}×: ' + ('met' if $1 >= $2 else 'MISSED'))"
}
