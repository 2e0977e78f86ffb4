#!/usr/bin/env bash
# The "many small chunks on a cluster" line of make bench (bench/run.sh runs it; it also
# runs alone): 3,000 chunks of 100 rows PostgreSQL → PostgreSQL (the table of run.sh's
# small_chunks), verification on, on a cluster of real processes: one ferry-coordinator
# and N ferry-worker processes of 2 slots each over the test etcd (a fresh cluster
# prefix, deleted at the end), the job's concurrency N × 2. Prints
# "chunks_per_s=R seconds=S workers=N": S from `ferryctl submit --wait` sent to its end
# (planning included).
#   FERRY_BENCH_CLUSTER_WORKERS  worker processes (default 40)
#   FERRY_BENCH_BIN_DIR          ferry-coordinator, ferry-worker and ferryctl (default ./target/release)
#   FERRY_BENCH_ETCD_ENDPOINTS   the etcd to run on (default: the services' etcd)
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
eval "$(bash scripts/services.sh env)"
CS_WORKERS=${FERRY_BENCH_CLUSTER_WORKERS:-40}
CS_ETCD=${FERRY_BENCH_ETCD_ENDPOINTS:-$FERRY_TEST_ETCD_ENDPOINTS}
CS_BIN=${FERRY_BENCH_BIN_DIR:-./target/release}
CS_DIR=${FERRY_BENCH_DIR:-/tmp/ferry-bench}/cluster-small
CS_CLUSTER="bench-small-$$"
CS_PSQL=(psql -X -q -v ON_ERROR_STOP=1)
rm -rf "$CS_DIR" && mkdir -p "$CS_DIR"

"${CS_PSQL[@]}" -d "$FERRY_TEST_PG_URL" -c "DROP DATABASE IF EXISTS ferry_bench_csmall" \
  -c "DROP DATABASE IF EXISTS ferry_bench_csmall_dst" -c "CREATE DATABASE ferry_bench_csmall" \
  -c "CREATE DATABASE ferry_bench_csmall_dst"
CSMALL_SRC=$(sed 's#/ferry_test#/ferry_bench_csmall#' <<<"$FERRY_TEST_PG_URL")
CSMALL_DST=$(sed 's#/ferry_test#/ferry_bench_csmall_dst#' <<<"$FERRY_TEST_PG_URL")
export CSMALL_SRC CSMALL_DST
"${CS_PSQL[@]}" -d "$CSMALL_SRC" -c "CREATE TABLE t (id bigint PRIMARY KEY, n int, note text);
  INSERT INTO t SELECT g, g % 1000, 'row ' || g FROM generate_series(1, 300000) g; ANALYZE t;"

cs_pids=()
cs_cleanup() {
  for pid in "${cs_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${cs_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  ETCDCTL_API=3 etcdctl --endpoints "$CS_ETCD" del --prefix "/ferry/$CS_CLUSTER/" >/dev/null || true
  "${CS_PSQL[@]}" -d "$FERRY_TEST_PG_URL" -c "DROP DATABASE IF EXISTS ferry_bench_csmall" \
    -c "DROP DATABASE IF EXISTS ferry_bench_csmall_dst" || true
}
trap cs_cleanup EXIT

export FERRY_COORDINATOR__ETCD__ENDPOINTS=$CS_ETCD
export FERRY_WORKER__ETCD__ENDPOINTS=$CS_ETCD
"$CS_BIN/ferry-coordinator" --cluster "$CS_CLUSTER" --name c1 --listen 127.0.0.1:0 \
  > "$CS_DIR/coordinator.out" 2> "$CS_DIR/coordinator.log" &
cs_pids+=($!)
for i in $(seq 1 "$CS_WORKERS"); do
  "$CS_BIN/ferry-worker" --cluster "$CS_CLUSTER" --name "w$i" --slots 2 2> "$CS_DIR/w$i.log" > /dev/null &
  cs_pids+=($!)
done
for _ in $(seq 1 300); do
  grep -q listening "$CS_DIR/coordinator.out" 2>/dev/null && break
  sleep 0.2
done
CS_ADDRESS=$(awk '/listening/ {print $NF; exit}' "$CS_DIR/coordinator.out")
[ -n "$CS_ADDRESS" ] || { echo "the coordinator did not start; see $CS_DIR/coordinator.log" >&2; exit 1; }
export FERRY_ENDPOINT="http://$CS_ADDRESS"
# Every worker registered before the clock starts.
for _ in $(seq 1 600); do
  live=$("$CS_BIN/ferryctl" workers -o json 2>/dev/null | python3 -c "import json, sys; print(len(json.load(sys.stdin)))" 2>/dev/null || echo 0)
  (( live >= CS_WORKERS )) && break
  sleep 0.2
done
(( live >= CS_WORKERS )) || { echo "only $live of $CS_WORKERS workers registered" >&2; exit 1; }

printf 'name: csmall\nsource: { kind: postgres, url_env: CSMALL_SRC }\ntarget: { kind: postgres, url_env: CSMALL_DST }\ntables: { include: [public.t] }\nschema: recreate\nchunking: { target_rows: 100 }\nthrottle: { default_concurrency: %d }\n' \
  "$((CS_WORKERS * 2))" > "$CS_DIR/job.yaml"
cs_started=$(date +%s.%N)
"$CS_BIN/ferryctl" submit "$CS_DIR/job.yaml" --wait > "$CS_DIR/submit.out" 2> "$CS_DIR/submit.log"
cs_ended=$(date +%s.%N)
cs_rows=$("${CS_PSQL[@]}" -d "$CSMALL_DST" -t -A -c "SELECT count(*) FROM t")
[ "$cs_rows" = 300000 ] || { echo "the target has $cs_rows rows, not 300000" >&2; exit 1; }
python3 -c "s = $cs_ended - $cs_started; print(f'chunks_per_s={3000 / s:.0f} seconds={s:.2f} workers=$CS_WORKERS')"
