#!/usr/bin/env bash
# The TPC-H line of make bench: the 8 TPC-H tables at scale factor 1 (8.66 M rows), with
# their primary keys, copied PostgreSQL → PostgreSQL by ferry (verification on,
# `schema: recreate`) against what a user runs instead: `pg_dump -t ... | psql` into an
# empty database (which verifies nothing). Data from `tpchgen-cli` (PyPI), installed into
# a venv under the bench folder when it is not on PATH. Sourced by bench/run.sh (which
# appends its line to the results); run alone it prints it:
#   FERRY_BENCH_RUNS=1 bash bench/tpch.sh
#   FERRY_BENCH_TPCH_SCALE   scale factor (default 1)
#   FERRY_BENCH_KEEP         keep the databases afterwards
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/helpers.sh
source bench/helpers.sh
mkdir -p "$WORK"
eval "$(bash scripts/services.sh env)"
TPCH_SCALE=${FERRY_BENCH_TPCH_SCALE:-1}
TPCH_DIR=$WORK/tpch-sf$TPCH_SCALE
TPCH_TABLES=(region nation part supplier partsupp customer orders lineitem)

echo "== TPC-H SF $TPCH_SCALE pg -> pg" >&2
TPCHGEN=$(command -v tpchgen-cli || true)
if [ -z "$TPCHGEN" ]; then
  TPCH_VENV=${FERRY_BENCH_TPCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry-bench/tpchgen-venv}
  if [ ! -x "$TPCH_VENV/bin/tpchgen-cli" ]; then
    mkdir -p "$(dirname "$TPCH_VENV")"
    if python3 -m venv "$TPCH_VENV" >&2; then
      "$TPCH_VENV/bin/pip" install -q tpchgen-cli >&2
    else # no venv module (Debian without python3-venv): the user's site instead
      rm -rf "$TPCH_VENV" && mkdir -p "$TPCH_VENV/bin"
      python3 -m pip install -q --user tpchgen-cli >&2
      ln -s "$(python3 -m site --user-base)/bin/tpchgen-cli" "$TPCH_VENV/bin/tpchgen-cli"
    fi
  fi
  TPCHGEN=$TPCH_VENV/bin/tpchgen-cli
fi
if [ ! -s "$TPCH_DIR/lineitem.csv" ]; then
  mkdir -p "$TPCH_DIR"
  "$TPCHGEN" csv --scale-factor "$TPCH_SCALE" --output-dir "$TPCH_DIR" --overwrite >&2
fi

TPCH_ADMIN=(psql -X -q -v ON_ERROR_STOP=1 -d "$FERRY_TEST_PG_URL")
tpch_url() { sed "s#/ferry_test#/$1#" <<<"$FERRY_TEST_PG_URL"; }
TPCH_SRC=$(tpch_url ferry_bench_tpch) TPCH_DST=$(tpch_url ferry_bench_tpch_dst)
TPCH_PEER=$(tpch_url ferry_bench_tpch_peer)
export TPCH_SRC TPCH_DST
"${TPCH_ADMIN[@]}" -c "DROP DATABASE IF EXISTS ferry_bench_tpch" -c "DROP DATABASE IF EXISTS ferry_bench_tpch_dst" \
  -c "CREATE DATABASE ferry_bench_tpch" -c "CREATE DATABASE ferry_bench_tpch_dst"
# The TPC-H schema (specification 2.18, section 1.4) with its primary keys; loaded first,
# keyed after.
{
  cat <<'SQL'
CREATE TABLE region (r_regionkey integer NOT NULL, r_name char(25) NOT NULL, r_comment varchar(152));
CREATE TABLE nation (n_nationkey integer NOT NULL, n_name char(25) NOT NULL, n_regionkey integer NOT NULL,
  n_comment varchar(152));
CREATE TABLE part (p_partkey integer NOT NULL, p_name varchar(55) NOT NULL, p_mfgr char(25) NOT NULL,
  p_brand char(10) NOT NULL, p_type varchar(25) NOT NULL, p_size integer NOT NULL, p_container char(10) NOT NULL,
  p_retailprice decimal(15,2) NOT NULL, p_comment varchar(23) NOT NULL);
CREATE TABLE supplier (s_suppkey integer NOT NULL, s_name char(25) NOT NULL, s_address varchar(40) NOT NULL,
  s_nationkey integer NOT NULL, s_phone char(15) NOT NULL, s_acctbal decimal(15,2) NOT NULL,
  s_comment varchar(101) NOT NULL);
CREATE TABLE partsupp (ps_partkey integer NOT NULL, ps_suppkey integer NOT NULL, ps_availqty integer NOT NULL,
  ps_supplycost decimal(15,2) NOT NULL, ps_comment varchar(199) NOT NULL);
CREATE TABLE customer (c_custkey integer NOT NULL, c_name varchar(25) NOT NULL, c_address varchar(40) NOT NULL,
  c_nationkey integer NOT NULL, c_phone char(15) NOT NULL, c_acctbal decimal(15,2) NOT NULL,
  c_mktsegment char(10) NOT NULL, c_comment varchar(117) NOT NULL);
CREATE TABLE orders (o_orderkey bigint NOT NULL, o_custkey integer NOT NULL, o_orderstatus char(1) NOT NULL,
  o_totalprice decimal(15,2) NOT NULL, o_orderdate date NOT NULL, o_orderpriority char(15) NOT NULL,
  o_clerk char(15) NOT NULL, o_shippriority integer NOT NULL, o_comment varchar(79) NOT NULL);
CREATE TABLE lineitem (l_orderkey bigint NOT NULL, l_partkey integer NOT NULL, l_suppkey integer NOT NULL,
  l_linenumber integer NOT NULL, l_quantity decimal(15,2) NOT NULL, l_extendedprice decimal(15,2) NOT NULL,
  l_discount decimal(15,2) NOT NULL, l_tax decimal(15,2) NOT NULL, l_returnflag char(1) NOT NULL,
  l_linestatus char(1) NOT NULL, l_shipdate date NOT NULL, l_commitdate date NOT NULL,
  l_receiptdate date NOT NULL, l_shipinstruct char(25) NOT NULL, l_shipmode char(10) NOT NULL,
  l_comment varchar(44) NOT NULL);
SQL
  for table in "${TPCH_TABLES[@]}"; do
    echo "\\copy $table FROM '$TPCH_DIR/$table.csv' WITH (FORMAT csv, HEADER true)"
  done
  cat <<'SQL'
ALTER TABLE region ADD PRIMARY KEY (r_regionkey);
ALTER TABLE nation ADD PRIMARY KEY (n_nationkey);
ALTER TABLE part ADD PRIMARY KEY (p_partkey);
ALTER TABLE supplier ADD PRIMARY KEY (s_suppkey);
ALTER TABLE partsupp ADD PRIMARY KEY (ps_partkey, ps_suppkey);
ALTER TABLE customer ADD PRIMARY KEY (c_custkey);
ALTER TABLE orders ADD PRIMARY KEY (o_orderkey);
ALTER TABLE lineitem ADD PRIMARY KEY (l_orderkey, l_linenumber);
VACUUM ANALYZE;
SQL
} | psql -X -q -v ON_ERROR_STOP=1 -d "$TPCH_SRC"
TPCH_ROWS=$(psql -X -At -d "$TPCH_SRC" -c "SELECT $(printf '(SELECT count(*) FROM %s) + ' "${TPCH_TABLES[@]}") 0")
TPCH_ROWS_M=$(python3 -c "print(f'{$TPCH_ROWS / 1e6:.2f}')")

# The same settings as the pg → pg line (chunks of 250,000 rows, 2 in flight, 4 workers).
cat > "$WORK/tpch.yaml" <<YAML
name: tpch
source: { kind: postgres, url_env: TPCH_SRC }
target: { kind: postgres, url_env: TPCH_DST }
tables: { include: ["public.*"] }
schema: recreate
chunking: { target_rows: 250000 }
verify: { mode: checksum }
throttle: { default_concurrency: $CONCURRENCY }
YAML
tpch_ferry() {
  rm -f "$WORK/tpch.state.db"*
  "$FERRYCTL" local "$WORK/tpch.yaml" --state "$WORK/tpch.state.db" --workers 4 --json > "$WORK/tpch.json"
  python3 -c "import json,sys; r=json.load(open('$WORK/tpch.json')); sys.exit(0 if r['ok'] and r['rows']==$TPCH_ROWS else 1)"
}
tpch_peer_reset() {
  "${TPCH_ADMIN[@]}" -c "DROP DATABASE IF EXISTS ferry_bench_tpch_peer" -c "CREATE DATABASE ferry_bench_tpch_peer"
}
TPCH_DUMP_TABLES=()
for table in "${TPCH_TABLES[@]}"; do TPCH_DUMP_TABLES+=(-t "public.$table"); done
tpch_peer() { # schema, data (COPY), then the primary keys: what pg_dump writes
  pg_dump -d "$TPCH_SRC" "${TPCH_DUMP_TABLES[@]}" \
    | psql -X -q -v ON_ERROR_STOP=1 -d "$TPCH_PEER" > /dev/null
  [ "$(psql -X -At -d "$TPCH_PEER" -c "SELECT count(*) FROM lineitem")" = "$(psql -X -At -d "$TPCH_SRC" -c "SELECT count(*) FROM lineitem")" ]
}
tpch_on=$(timed nothing tpch_ferry)
tpch_dump=$(timed tpch_peer_reset tpch_peer)
# How the planner cut the tables (composite keys: lineitem, partsupp), from the last run.
tpch_chunks=$(python3 -c "import json; r = json.load(open('$WORK/tpch.json')); print(', '.join(f\"{t['table']} {t['chunks']} ({t['split_key']})\" for t in r['tables']))")
tpch_rate() { python3 -c "print(f'{$TPCH_ROWS / $1:,.0f}')"; }
tpch_lines=(
  "| TPC-H SF $TPCH_SCALE ($TPCH_ROWS_M M rows, 8 tables) pg → pg | ferry, verify on | $(tpch_rate "$tpch_on") | pg_dump \\| psql (verifies nothing) | $(tpch_rate "$tpch_dump") | $(ratio "$tpch_on" "$tpch_dump") | $(goal "$(ratio "$tpch_on" "$tpch_dump")" 1.0) |"
)
tpch_ratio=$(ratio "$tpch_on" "$tpch_dump")
if [ -z "${FERRY_BENCH_KEEP:-}" ]; then
  "${TPCH_ADMIN[@]}" -c "DROP DATABASE IF EXISTS ferry_bench_tpch" -c "DROP DATABASE IF EXISTS ferry_bench_tpch_dst" \
    -c "DROP DATABASE IF EXISTS ferry_bench_tpch_peer"
fi
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  printf '%s\n' "${tpch_lines[@]}"
  echo "ferry ${tpch_on} s, pg_dump | psql ${tpch_dump} s; ferry verify on / peer: ${tpch_ratio}×; chunks: ${tpch_chunks}"
fi
