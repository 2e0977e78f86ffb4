#!/usr/bin/env bash
# The helpers bench/run.sh defines, for a section script run alone (bench/clickhouse.sh,
# bench/cutover.sh): the same timing without the quiet-machine wait. Sourced only when
# `timed` is not defined yet.
now() { date +%s.%N; }
# timed SETUP RUN: runs SETUP (untimed) and times RUN, RUNS times; prints the median seconds.
timed() {
  local times=() i s e
  for ((i = 0; i < RUNS; i++)); do
    $1 >&2
    s=$(now); $2 >&2; e=$(now)
    times+=("$(python3 -c "print($e - $s)")")
  done
  python3 -c "import statistics, sys; print(statistics.median(map(float, sys.argv[1:])))" "${times[@]}"
}
nothing() { :; }
rate() { python3 -c "print(f'{$ROWS / $1:,.0f}')"; }
ratio() { python3 -c "print(f'{$2 / $1:.2f}')"; }   # ferry seconds, peer seconds: peer time / ferry time
