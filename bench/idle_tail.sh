#!/usr/bin/env bash
# The "no idle tail" line of make bench (bench/run.sh sources it; it also runs alone):
# a PostgreSQL table with four partitions of N rows and one of 20·N, each planned as one
# chunk (a large target_rows), copied pg → pg by `ferryctl local --workers 4` with
# chunking.split_idle on and off. Prints "split=SECONDS whole=SECONDS" (job times from
# ferryctl's --json report).
#   FERRY_BENCH_TAIL_ROWS   rows of each small partition (default 50,000: 1,200,000 in all)
#   FERRY_BENCH_FERRYCTL    the ferryctl binary (default ./target/release/ferryctl)
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
eval "$(bash scripts/services.sh env)"
TAIL_ROWS=${FERRY_BENCH_TAIL_ROWS:-50000}
TAIL_FERRYCTL=${FERRY_BENCH_FERRYCTL:-./target/release/ferryctl}
TAIL_DIR=${FERRY_BENCH_DIR:-/tmp/ferry-bench}/idle-tail
TAIL_PSQL=(psql -X -q -v ON_ERROR_STOP=1 -d "$FERRY_TEST_PG_URL")
rm -rf "$TAIL_DIR" && mkdir -p "$TAIL_DIR"

"${TAIL_PSQL[@]}" -c "DROP DATABASE IF EXISTS ferry_bench_tail" -c "DROP DATABASE IF EXISTS ferry_bench_tail_dst" \
  -c "CREATE DATABASE ferry_bench_tail" -c "CREATE DATABASE ferry_bench_tail_dst"
TAIL_SRC=$(sed 's#/ferry_test#/ferry_bench_tail#' <<<"$FERRY_TEST_PG_URL")
TAIL_DST=$(sed 's#/ferry_test#/ferry_bench_tail_dst#' <<<"$FERRY_TEST_PG_URL")
export TAIL_SRC TAIL_DST
{
  echo "CREATE TABLE t (id bigint PRIMARY KEY, n int, note text) PARTITION BY RANGE (id);"
  for part in 0 1 2 3 4; do
    rows=$TAIL_ROWS
    [ "$part" = 4 ] && rows=$((TAIL_ROWS * 20))
    low=$((part * 1000000000))
    echo "CREATE TABLE t_p$part PARTITION OF t FOR VALUES FROM ($low) TO ($((low + 1000000000)));"
    echo "INSERT INTO t SELECT $low + g, g % 1000, 'row ' || g FROM generate_series(1, $rows) g;"
  done
  echo "ANALYZE t;"
} | psql -X -q -v ON_ERROR_STOP=1 -d "$TAIL_SRC"
TAIL_TOTAL=$((TAIL_ROWS * 24))

idle_tail_run() { # split_idle: true or false; prints the job's seconds
  local dir="$TAIL_DIR/$1"
  rm -rf "$dir" && mkdir -p "$dir"
  printf 'name: tail\nsource: { kind: postgres, url_env: TAIL_SRC }\ntarget: { kind: postgres, url_env: TAIL_DST }\ntables: { include: [public.t] }\nschema: recreate\nchunking: { target_rows: 100000000, split_idle: %s }\nthrottle: { default_concurrency: 4 }\n' "$1" > "$dir/job.yaml"
  "$TAIL_FERRYCTL" local "$dir/job.yaml" --state "$dir/state.db" --workers 4 --json > "$dir/out.json" 2> "$dir/err.log"
  python3 -c "import json; r = json.load(open('$dir/out.json')); assert r['ok'] and r['rows'] == $TAIL_TOTAL, r; print(round(r['duration_secs'], 2))"
}
tail_split=$(idle_tail_run true)
tail_whole=$(idle_tail_run false)
"${TAIL_PSQL[@]}" -c "DROP DATABASE ferry_bench_tail" -c "DROP DATABASE ferry_bench_tail_dst"
echo "split=$tail_split whole=$tail_whole"
