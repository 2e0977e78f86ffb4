#!/usr/bin/env bash
# Checking and catching up, for make bench (issue 12), on the pg → pg orders table after
# its copy: (a) a verify-only pass (`ferryctl verify`) against the SQL peer, count(*) and
# an md5 sum aggregate run on both sides at once (two psql); (b) a `ferryctl sync` pass
# after 1 % of the rows changed at the source (0.9 % updated, 0.05 % inserted, 0.05 %
# deleted), on a copy of the table with an `updated_at` watermark column, against a full
# re-copy of the same table (`ferryctl local` with a new state file: every chunk
# overwritten and verified). Sourced by bench/run.sh after its pg → pg section (which
# loaded bench_src.orders and copied it with the pgpg_verify job); run alone it loads a
# table of its own shape first and prints its lines:
#   FERRY_BENCH_ROWS=200000 FERRY_BENCH_RUNS=1 bash bench/cutover.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Run alone: loads the table first (run.sh has loaded and copied it).
[ "${BASH_SOURCE[0]}" = "$0" ] && standalone=1 || standalone=""
# shellcheck source=bench/helpers.sh
source bench/helpers.sh
mkdir -p "$WORK"
eval "$(bash scripts/services.sh env)"
PG_PORT=${FERRY_PG_PORT:-55432}
if [ -n "$standalone" ]; then
  PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres)
  export SRC_PG="postgres://postgres@127.0.0.1:$PG_PORT/ferry_bench_src" DST_PG="postgres://postgres@127.0.0.1:$PG_PORT/ferry_bench_dst"
  echo "== standalone: loading $ROWS orders rows and copying them" >&2
  "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS ferry_bench_src" -c "DROP DATABASE IF EXISTS ferry_bench_dst" \
    -c "CREATE DATABASE ferry_bench_src" -c "CREATE DATABASE ferry_bench_dst" >&2
  "${PSQL[@]}" -d ferry_bench_src >&2 <<SQL
CREATE SCHEMA bench_src;
CREATE TABLE bench_src.orders (id bigint PRIMARY KEY, customer_id int NOT NULL, amount numeric(12,2) NOT NULL,
  status varchar(20) NOT NULL, note text, created_at timestamp NOT NULL);
INSERT INTO bench_src.orders SELECT i, (i * 31) % 100000, ((i * 7919) % 10000000) / 100.0,
  (ARRAY['new', 'paid', 'shipped', 'delivered', 'returned'])[i % 5 + 1], 'note ' || to_hex(i) || ' ' || repeat('x', (i % 40)::int),
  to_timestamp(1577836800 + i * 13) AT TIME ZONE 'UTC' FROM generate_series(1::bigint, $ROWS) AS i;
VACUUM ANALYZE bench_src.orders;
SQL
  cat > "$WORK/pgpg_verify.yaml" <<YAML
name: pgpg_verify
source: { kind: postgres, url_env: SRC_PG }
target: { kind: postgres, url_env: DST_PG }
tables: { include: ["orders"] }
schema: recreate
chunking: { target_rows: 250000 }
throttle: { default_concurrency: $CONCURRENCY }
YAML
  rm -f "$WORK/pgpg_verify.ferry-state.db"*
  "$FERRYCTL" local "$WORK/pgpg_verify.yaml" --workers 4 --json > "$WORK/pgpg_verify.json"
fi

echo "== verify-only pass and sync pass, pg -> pg ($ROWS rows)" >&2
# (a) `ferryctl verify` of the copied table: every chunk counted and checksummed on both
# sides, nothing written; exit 0 only when both sides agree.
ferry_verify() {
  "$FERRYCTL" verify "$WORK/pgpg_verify.yaml" --workers 4 --json > "$WORK/verify.json"
}
# The peer: what an operator runs in SQL, on both sides at once; they must agree too.
PEER_SUM="SELECT count(*), sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric) FROM bench_src.orders t"
sql_verify() {
  "${PSQL[@]}" -d ferry_bench_src -Atc "$PEER_SUM" > "$WORK/peer_src.txt" &
  "${PSQL[@]}" -d ferry_bench_dst -Atc "$PEER_SUM" > "$WORK/peer_dst.txt" &
  wait
  cmp -s "$WORK/peer_src.txt" "$WORK/peer_dst.txt"
}
verify_secs=$(timed nothing ferry_verify)
verify_peer_secs=$(timed nothing sql_verify)

# (b) A copy of the table with a watermark column (an index on it, as sync advises).
"${PSQL[@]}" -d ferry_bench_src >&2 <<SQL
DROP TABLE IF EXISTS bench_src.orders_sync;
CREATE TABLE bench_src.orders_sync AS SELECT *, created_at AS updated_at FROM bench_src.orders;
ALTER TABLE bench_src.orders_sync ADD PRIMARY KEY (id), ALTER COLUMN updated_at SET NOT NULL;
CREATE INDEX ON bench_src.orders_sync (updated_at);
VACUUM ANALYZE bench_src.orders_sync;
SQL
"${PSQL[@]}" -d ferry_bench_dst -c "DROP TABLE IF EXISTS bench_src.orders_sync" >&2
# lag 0s: each round's rows get watermarks spread one microsecond apart, past the last
# round's, so a pass re-reads only the last round's newest row (a real deployment's lag
# re-reads the rows written within it as well).
cat > "$WORK/pgsync.yaml" <<YAML
name: pgsync
source: { kind: postgres, url_env: SRC_PG }
target: { kind: postgres, url_env: DST_PG }
tables: { include: ["orders_sync"] }
chunking: { target_rows: 250000 }
throttle: { default_concurrency: $CONCURRENCY }
watermark: { column: updated_at, lag: 0s }
YAML
sync_copy() { # a full copy (or re-copy, overwriting every chunk) with a new state file
  rm -f "$WORK/pgsync.ferry-state.db"*
  "$FERRYCTL" local "$WORK/pgsync.yaml" --workers 4 --json > "$WORK/pgsync.json"
  python3 -c "import json,sys; sys.exit(0 if json.load(open('$WORK/pgsync.json'))['ok'] else 1)"
}
sync_pass() {
  "$FERRYCTL" sync "$WORK/pgsync.yaml" --state "$WORK/pgsync.sync.json" --json > "$WORK/pgsync.pass.json"
}
rm -f "$WORK/pgsync.sync.json"
sync_copy
sync_pass # the first pass reads every row once and stores the high-water mark
round=0
changed=$((ROWS / 100))
change_one_percent() { # 0.9 % updated, 0.05 % inserted, 0.05 % deleted; other rows each round
  round=$((round + 1))
  local at="'2030-01-01'::timestamp + interval '$round days'"
  "${PSQL[@]}" -d ferry_bench_src <<SQL
UPDATE bench_src.orders_sync SET amount = amount + 1, updated_at = $at + id * interval '1 microsecond'
  WHERE id % 1000 BETWEEN 10 * $round AND 10 * $round + 8;
INSERT INTO bench_src.orders_sync SELECT id + $ROWS * (1 + $round), customer_id, amount, status, note, created_at,
    $at + id * interval '1 microsecond'
  FROM bench_src.orders WHERE id % 2000 = 0;
DELETE FROM bench_src.orders_sync WHERE id % 2000 = 1999 - $round;
SQL
}
sync_secs=$(timed change_one_percent sync_pass)
sync_last=$(cat "$WORK/pgsync.pass.json")
recopy_secs=$(timed nothing sync_copy)
# Both sides agree after the last re-copy, checked with the same SQL as the peer.
for side in src dst; do
  "${PSQL[@]}" -d "ferry_bench_$side" -Atc "${PEER_SUM/bench_src.orders/bench_src.orders_sync}" > "$WORK/sync_$side.txt"
done
cmp -s "$WORK/sync_src.txt" "$WORK/sync_dst.txt"

secs() { python3 -c "print(f'{$1:.2f}')"; }
cutover_lines=(
  "| \`ferryctl verify\` (verify-only job: count + checksum of every chunk on both sides, nothing written) | $(secs "$verify_secs") s | $(rate "$verify_secs") | count(*) + md5 sum aggregate in SQL, both sides at once (two psql) | $(secs "$verify_peer_secs") s | $(ratio "$verify_secs" "$verify_peer_secs") |"
  "| \`ferryctl sync\` pass after 1 % of the rows changed ($changed: updates, inserts, deletes) | $(secs "$sync_secs") s | $(rate "$sync_secs") | full re-copy (\`ferryctl local\`, every chunk overwritten and verified) | $(secs "$recopy_secs") s | $(ratio "$sync_secs" "$recopy_secs") |"
)
verify_ratio=$(ratio "$verify_secs" "$verify_peer_secs")
sync_ratio=$(ratio "$sync_secs" "$recopy_secs")
"${PSQL[@]}" -d ferry_bench_src -c "DROP TABLE bench_src.orders_sync" >&2
"${PSQL[@]}" -d ferry_bench_dst -c "DROP TABLE bench_src.orders_sync" >&2
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  printf '%s\n' "${cutover_lines[@]}"
  echo "last sync pass: $sync_last"
  echo "verify-only / SQL peer: ${verify_ratio}×; sync pass / full re-copy: ${sync_ratio}×"
fi
