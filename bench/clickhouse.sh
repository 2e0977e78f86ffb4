#!/usr/bin/env bash
# ClickHouse -> ClickHouse for make bench: ferry (verification off and on) against the
# field's method, `INSERT INTO t SELECT * FROM remote(...)` run per partition on the
# target, on the same data, source on server 1 and target on server 2 of
# scripts/services.sh. Sourced by bench/run.sh (which appends its lines to the results);
# run alone it prints them:
#   FERRY_BENCH_ROWS=200000 FERRY_BENCH_RUNS=1 bash bench/clickhouse.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/helpers.sh
source bench/helpers.sh
mkdir -p "$WORK"
eval "$(bash scripts/services.sh env)"
CH1_TCP=${FERRY_CH_TCP_PORT:-59000}
CH2_TCP=${FERRY_CH2_TCP_PORT:-59001}
ch1() { clickhouse-client --host 127.0.0.1 --port "$CH1_TCP" --multiquery --query "$1"; }
ch2() { clickhouse-client --host 127.0.0.1 --port "$CH2_TCP" --multiquery --query "$1"; }

echo "== clickhouse -> clickhouse ($ROWS rows)" >&2
TABLE="(id UInt64, customer_id UInt32, amount Decimal(12, 2), status String, note String, created_at DateTime)
  ENGINE = MergeTree PARTITION BY toYYYYMM(created_at) ORDER BY id"
ch1 "DROP DATABASE IF EXISTS bench_ch_src; CREATE DATABASE bench_ch_src;
  CREATE TABLE bench_ch_src.orders $TABLE;
  INSERT INTO bench_ch_src.orders SELECT number + 1, (number + 1) * 31 % 100000, ((number + 1) * 7919 % 10000000) / 100,
    ['new', 'paid', 'shipped', 'delivered', 'returned'][(number + 1) % 5 + 1],
    concat('note ', hex(number + 1), ' ', substring('xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx', 1, (number + 1) % 40)),
    toDateTime(1577836800 + (number + 1) * 13) FROM system.numbers LIMIT $ROWS;"
ch2 "DROP DATABASE IF EXISTS bench_ch_dst; DROP DATABASE IF EXISTS bench_ch_peer;
  CREATE DATABASE bench_ch_dst; CREATE DATABASE bench_ch_peer;"
mapfile -t CH_PARTITIONS < <(ch1 "SELECT DISTINCT partition_id FROM system.parts WHERE database = 'bench_ch_src' AND table = 'orders' AND active ORDER BY 1")
export SRC_CH="http://default@127.0.0.1:${FERRY_CH_HTTP_PORT:-58123}/bench_ch_src"
export DST_CH="http://default@127.0.0.1:${FERRY_CH2_HTTP_PORT:-58124}/bench_ch_dst"
ch_spec() { # name verify [source clickhouse options]
  cat > "$WORK/$1.yaml" <<YAML
name: $1
source: { kind: clickhouse, url_env: SRC_CH, clickhouse: { ${3:-} } }
target: { kind: clickhouse, url_env: DST_CH }
tables: { include: ["orders"] }
schema: recreate
chunking: { target_rows: 250000 }
verify: { mode: $2 }
throttle: { default_concurrency: $CONCURRENCY }
YAML
}
ch_ferry() { # spec
  rm -f "$WORK/$1.ferry-state.db"*
  "$FERRYCTL" local "$WORK/$1.yaml" --workers 4 --json > "$WORK/$1.json"
  python3 -c "import json,sys; r=json.load(open('$WORK/$1.json')); sys.exit(0 if r['ok'] and r['rows']==$ROWS else 1)"
}
ch_spec chch_noverify none
ch_spec chch_verify checksum
# The target pulls each chunk itself (remote() to the source's native port); ferry stages,
# fences, swaps and has both servers checksum the chunk.
ch_spec chch_pull checksum "pull_address: \"127.0.0.1:$CH1_TCP\""
ferry_chch_noverify() { ch_ferry chch_noverify; }
ferry_chch_verify() { ch_ferry chch_verify; }
ferry_chch_pull() { ch_ferry chch_pull; }
ch_peer_reset() { ch2 "DROP TABLE IF EXISTS bench_ch_peer.orders; CREATE TABLE bench_ch_peer.orders $TABLE"; }
ch_peer_partition() {
  ch2 "INSERT INTO bench_ch_peer.orders SELECT * FROM remote('127.0.0.1:$CH1_TCP', bench_ch_src.orders) WHERE _partition_id = '$1'"
}
ch_peer() { # the partitions, $CONCURRENCY at a time, like ferry's chunks in flight
  export -f ch2 ch_peer_partition
  export CH2_TCP CH1_TCP
  printf '%s\n' "${CH_PARTITIONS[@]}" | xargs -P "$CONCURRENCY" -I{} bash -c 'ch_peer_partition "$1"' _ {}
  [ "$(ch2 "SELECT count() FROM bench_ch_peer.orders")" = "$ROWS" ]
}
chch_off=$(timed nothing ferry_chch_noverify)
chch_on=$(timed nothing ferry_chch_verify)
chch_pull=$(timed nothing ferry_chch_pull)
chch_peer=$(timed ch_peer_reset ch_peer)
ch_lines=(
  "| clickhouse → clickhouse | ferry, verify off | $(rate "$chch_off") | INSERT … SELECT FROM remote() per partition | $(rate "$chch_peer") | $(ratio "$chch_off" "$chch_peer") | — |"
  "| clickhouse → clickhouse | ferry, verify on | $(rate "$chch_on") | INSERT … SELECT FROM remote() per partition | $(rate "$chch_peer") | $(ratio "$chch_on" "$chch_peer") | $(goal "$(ratio "$chch_on" "$chch_peer")" 1.0) |"
  "| clickhouse → clickhouse | ferry, target pulls (pull_address), verify on | $(rate "$chch_pull") | INSERT … SELECT FROM remote() per partition | $(rate "$chch_peer") | $(ratio "$chch_pull" "$chch_peer") | $(goal "$(ratio "$chch_pull" "$chch_peer")" 1.0) |"
)
# The goal's line: the fastest way ferry offers with verification on.
chch_ratio=$(python3 -c "print(max($(ratio "$chch_on" "$chch_peer"), $(ratio "$chch_pull" "$chch_peer")))")
chch_verify_cost=$(python3 -c "print(f'{($chch_on / $chch_off - 1) * 100:.0f}')")
[ -n "${FERRY_BENCH_KEEP:-}" ] || ch2 "DROP DATABASE IF EXISTS bench_ch_dst; DROP DATABASE IF EXISTS bench_ch_peer"
[ -n "${FERRY_BENCH_KEEP:-}" ] || ch1 "DROP DATABASE IF EXISTS bench_ch_src"
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  printf '%s\n' "${ch_lines[@]}"
  echo "verification costs ${chch_verify_cost}% on clickhouse → clickhouse; ferry verify on / peer: ${chch_ratio}×"
fi
