#!/usr/bin/env bash
# Real, hermetic database services for the tests, on loopback only:
# PostgreSQL, MariaDB, etcd, two ClickHouse servers (replicas of one shard, cluster
# ferry_test) and the ZooKeeper they replicate through, each our own instance in a
# throwaway state directory.
#
#   scripts/services.sh up       install what is missing (Debian packages), start them all
#                                in parallel (a no-op for what already runs), create
#                                database ferry_test
#   scripts/services.sh down     stop only what we started (by our pid files), remove the state dir
#   scripts/services.sh env      print shell exports: eval "$(scripts/services.sh env)"
#   scripts/services.sh status   say what runs (exit 0 only when all of them do)
#
# Environment (all optional):
#   FERRY_SERVICES_DIR      state dir                   (default /tmp/ferry-services)
#   FERRY_PG_PORT           PostgreSQL port             (default 55432)
#   FERRY_MYSQL_PORT        MariaDB port                (default 53306)
#   FERRY_ETCD_PORT         etcd client port            (default 52379)
#   FERRY_ETCD_PEER_PORT    etcd peer port              (default 52380)
#   FERRY_CH_HTTP_PORT      ClickHouse 1 HTTP port      (default 58123; TCP 59000, interserver 59009)
#   FERRY_CH2_HTTP_PORT     ClickHouse 2 HTTP port      (default 58124; TCP 59001, interserver 59010)
#   FERRY_CH_TCP_PORT, FERRY_CH2_TCP_PORT, FERRY_CH_INTERSERVER_PORT, FERRY_CH2_INTERSERVER_PORT
#   FERRY_ZK_PORT           ZooKeeper client port       (default 52181)
#   FERRY_SERVICES_TIMEOUT  seconds for each wait       (default 60)
#
# A system PostgreSQL (5432) or MariaDB (3306) that may run on the machine is never
# touched: we only ever signal processes whose pid we recorded and whose command line
# names our own state dir.
set -euo pipefail

STATE_DIR=${FERRY_SERVICES_DIR:-/tmp/ferry-services}
PG_PORT=${FERRY_PG_PORT:-55432}
MYSQL_PORT=${FERRY_MYSQL_PORT:-53306}
ETCD_PORT=${FERRY_ETCD_PORT:-52379}
ETCD_PEER_PORT=${FERRY_ETCD_PEER_PORT:-52380}
TIMEOUT=${FERRY_SERVICES_TIMEOUT:-60}
CH1_HTTP_PORT=${FERRY_CH_HTTP_PORT:-58123}
CH2_HTTP_PORT=${FERRY_CH2_HTTP_PORT:-58124}
CH1_TCP_PORT=${FERRY_CH_TCP_PORT:-59000}
CH2_TCP_PORT=${FERRY_CH2_TCP_PORT:-59001}
CH1_INTER_PORT=${FERRY_CH_INTERSERVER_PORT:-59009}
CH2_INTER_PORT=${FERRY_CH2_INTERSERVER_PORT:-59010}
ZK_PORT=${FERRY_ZK_PORT:-52181}
HOST=127.0.0.1
DB=ferry_test

PG_DIR=$STATE_DIR/pg
PG_DATA=$PG_DIR/data
PG_SOCK=$PG_DIR/run
PG_LOG=$PG_DIR/postgres.log

MY_DIR=$STATE_DIR/mariadb
MY_DATA=$MY_DIR/data
MY_SOCK=$MY_DIR/mariadb.sock
MY_PID=$MY_DIR/mariadb.pid      # written by our launcher (same pid as mariadbd's own)
MY_SRV_PID=$MY_DIR/mariadbd.pid # written by mariadbd
MY_LOG=$MY_DIR/mariadb.log
MY_INSTALL_LOG=$MY_DIR/install-db.log

ETCD_DIR=$STATE_DIR/etcd
ETCD_DATA=$ETCD_DIR/data
ETCD_PID=$ETCD_DIR/etcd.pid
ETCD_LOG=$ETCD_DIR/etcd.log

PG_URL="postgres://postgres@$HOST:$PG_PORT/$DB"
MYSQL_URL="mysql://root@$HOST:$MYSQL_PORT/$DB"
ETCD_ENDPOINTS="http://$HOST:$ETCD_PORT"
CH1_URL="http://default@$HOST:$CH1_HTTP_PORT/$DB"
CH2_URL="http://default@$HOST:$CH2_HTTP_PORT/$DB"

log() { echo "services: $*" >&2; }
die() {
    echo "services: ERROR: $*" >&2
    exit 1
}
# die with the tail of a log file
die_log() {
    local file=$1
    shift
    echo "services: ERROR: $*" >&2
    if [ -f "$file" ]; then
        echo "----- last lines of $file -----" >&2
        tail -n 40 "$file" >&2 || true
        echo "-----" >&2
    fi
    exit 1
}

is_root() { [ "$(id -u)" = 0 ]; }

# true when something accepts TCP connections on 127.0.0.1:$1
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# true when pid $1 is alive and its command line mentions $2 (our state dir)
pid_is_ours() {
    local pid=$1 needle=$2 cmdline
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ "$cmdline" == *"$needle"* ]]
}

read_pid() { [ -f "$1" ] && head -n1 "$1" | tr -dc '0-9' || true; }

# wait_until SECONDS DESCRIPTION CMD... : polls CMD every 0.2 s
wait_until() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    while ! "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            return 1
        fi
        sleep 0.2
    done
    log "$what ready"
}

# kill a pid we own: TERM, wait up to TIMEOUT, then KILL
stop_pid() {
    local pid=$1 needle=$2 what=$3
    pid_is_ours "$pid" "$needle" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "$what (pid $pid) did not stop within ${TIMEOUT}s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.2
    done
    log "$what stopped"
}

# Runs "$@" with every fd above 2 closed. The servers outlive us: an inherited fd (our
# lock, or a pipe of whoever ran us, like make's or CI's output) would be held open for
# the server's life, keeping the lock taken or the reader waiting for EOF.
# shellcheck disable=SC2016
CLOSE_FDS='for f in /proc/$$/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] && [ -e "$f" ] && eval "exec $n>&-"; done; '

# ---------------------------------------------------------------- binaries and packages

find_pg_bin() { # the highest installed major version with server binaries
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ] && echo "$d"
    done | sort -V | tail -n1
}

find_cmd() { # first of the names found on PATH or in the sbin dirs
    local n d
    for n in "$@"; do
        if command -v "$n" >/dev/null 2>&1; then
            command -v "$n"
            return 0
        fi
        for d in /usr/sbin /sbin /usr/bin /usr/local/sbin /usr/local/bin; do
            if [ -x "$d/$n" ]; then
                echo "$d/$n"
                return 0
            fi
        done
    done
    return 1
}

ensure_packages() {
    local missing=()
    [ -n "$(find_pg_bin)" ] || missing+=(postgresql)
    find_cmd psql >/dev/null || missing+=(postgresql-client)
    { find_cmd mariadbd mysqld >/dev/null && find_cmd mariadb-install-db mysql_install_db >/dev/null; } ||
        missing+=(mariadb-server)
    { find_cmd mariadb mysql >/dev/null && find_cmd mariadb-admin mysqladmin >/dev/null; } ||
        missing+=(mariadb-client)
    find_cmd etcd >/dev/null || missing+=(etcd-server)
    find_cmd etcdctl >/dev/null || missing+=(etcd-client)
    find_cmd curl >/dev/null || missing+=(curl)
    ch_missing_packages
    find_cmd runuser >/dev/null || missing+=(util-linux)
    [ "${#missing[@]}" -eq 0 ] && return 0

    local sudo=()
    if ! is_root; then
        command -v sudo >/dev/null 2>&1 || die "need Debian packages ${missing[*]} but not root and no sudo"
        sudo=(sudo)
    fi
    log "installing Debian packages: ${missing[*]}"
    local apt_log
    apt_log=$(mktemp /tmp/ferry-services-apt.XXXXXX)
    if ! "${sudo[@]}" apt-get update -qq >"$apt_log" 2>&1; then
        die_log "$apt_log" "apt-get update failed"
    fi
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >>"$apt_log" 2>&1; then
        die_log "$apt_log" "apt-get install ${missing[*]} failed"
    fi
    rm -f "$apt_log"
    [ -n "$(find_pg_bin)" ] || die "postgresql installed but no initdb/pg_ctl under /usr/lib/postgresql/*/bin"
}

# ---------------------------------------------------------------- PostgreSQL

PG_BIN=""
PG_OWNER="" # user that owns and runs our cluster

as_pg() { # as the cluster's owner, from /, with no fd above 2 (see CLOSE_FDS)
    if [ "$PG_OWNER" = postgres ] && is_root; then
        (cd / && runuser -u postgres -- bash -c "$CLOSE_FDS"'exec "$@"' as_pg "$@")
    else
        (cd / && bash -c "$CLOSE_FDS"'exec "$@"' as_pg "$@")
    fi
}

pg_running() {
    [ -f "$PG_DATA/postmaster.pid" ] || return 1
    pid_is_ours "$(read_pid "$PG_DATA/postmaster.pid")" "$PG_DATA"
}

pg_ready() { "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PG_PORT" -d postgres -U postgres; }

pg_locale() {
    if locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then
        echo C.UTF-8
    else
        echo C
    fi
}

pg_up() {
    PG_BIN=$(find_pg_bin)
    if is_root; then
        if ! id postgres >/dev/null 2>&1; then
            log "creating system user postgres"
            useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres ||
                die "could not create user postgres"
        fi
        PG_OWNER=postgres
    else
        PG_OWNER=$(id -un)
    fi

    if pg_running; then
        wait_until "$TIMEOUT" "PostgreSQL on $HOST:$PG_PORT" pg_ready ||
            die_log "$PG_LOG" "our PostgreSQL runs but does not accept connections on $HOST:$PG_PORT"
        pg_create_db
        return 0
    fi

    if [ ! -f "$PG_DIR/.initialized" ]; then
        rm -rf "$PG_DIR"
        mkdir -p "$PG_DATA" "$PG_SOCK"
        chmod 700 "$PG_DATA"
        if is_root; then
            chown -R postgres: "$PG_DIR"
            runuser -u postgres -- test -w "$PG_DATA" ||
                die "user postgres cannot write $PG_DATA: every parent of FERRY_SERVICES_DIR must be searchable by it"
        fi
        local loc
        loc=$(pg_locale)
        log "initdb ($PG_BIN, locale $loc)"
        if ! as_pg "$PG_BIN/initdb" -D "$PG_DATA" --auth=trust -U postgres --encoding=UTF8 \
            --locale="$loc" --no-sync >"$PG_DIR/initdb.log" 2>&1; then
            die_log "$PG_DIR/initdb.log" "initdb failed"
        fi
        touch "$PG_DIR/.initialized"
    fi

    port_open "$PG_PORT" && die "port $PG_PORT is already in use by something else (set FERRY_PG_PORT)"
    log "starting PostgreSQL on $HOST:$PG_PORT"
    if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" \
        -o "-p $PG_PORT -k $PG_SOCK -c listen_addresses=$HOST -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        -l "$PG_LOG" -w -t "$TIMEOUT" start >"$PG_DIR/pg_ctl.log" 2>&1; then
        cat "$PG_DIR/pg_ctl.log" >&2 || true
        die_log "$PG_LOG" "PostgreSQL did not start within ${TIMEOUT}s"
    fi
    wait_until "$TIMEOUT" "PostgreSQL on $HOST:$PG_PORT" pg_ready ||
        die_log "$PG_LOG" "PostgreSQL does not accept connections on $HOST:$PG_PORT"
    pg_create_db
}

pg_psql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$PG_PORT" -U postgres "$@"; }

pg_create_db() {
    local have
    have=$(pg_psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'") ||
        die_log "$PG_LOG" "cannot query our PostgreSQL"
    if [ "$have" != 1 ]; then
        pg_psql -d postgres -c "CREATE DATABASE $DB ENCODING 'UTF8' TEMPLATE template0" ||
            die_log "$PG_LOG" "CREATE DATABASE $DB failed on PostgreSQL"
    fi
}

pg_down() {
    [ -d "$PG_DATA" ] || return 0
    PG_BIN=$(find_pg_bin)
    PG_OWNER=$(stat -c %U "$PG_DATA" 2>/dev/null || id -un)
    local pid
    pid=$(read_pid "$PG_DATA/postmaster.pid")
    pid_is_ours "$pid" "$PG_DATA" || return 0
    if [ -n "$PG_BIN" ] && as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t "$TIMEOUT" stop >/dev/null 2>&1; then
        log "PostgreSQL stopped"
    else
        stop_pid "$pid" "$PG_DATA" PostgreSQL
    fi
}

# ---------------------------------------------------------------- MariaDB

MY_SERVER="" MY_INSTALL="" MY_CLIENT="" MY_ADMIN=""

my_bins() {
    MY_SERVER=$(find_cmd mariadbd mysqld) || die "mariadbd not found"
    MY_INSTALL=$(find_cmd mariadb-install-db mysql_install_db) || die "mariadb-install-db not found"
    MY_CLIENT=$(find_cmd mariadb mysql) || die "mariadb client not found"
    MY_ADMIN=$(find_cmd mariadb-admin mysqladmin) || die "mariadb-admin not found"
}

my_running() { pid_is_ours "$(read_pid "$MY_PID")" "$MY_DATA"; }

my_ping() { "$MY_ADMIN" --no-defaults --protocol=tcp -h"$HOST" -P"$MYSQL_PORT" -uroot --connect-timeout=2 ping; }

my_user_args() { is_root && echo "--user=root" || true; }

my_up() {
    my_bins
    if my_running; then
        wait_until "$TIMEOUT" "MariaDB on $HOST:$MYSQL_PORT" my_ping ||
            die_log "$MY_LOG" "our MariaDB runs but does not answer on $HOST:$MYSQL_PORT"
        my_setup
        return 0
    fi

    if [ ! -f "$MY_DIR/.initialized" ]; then
        rm -rf "$MY_DIR"
        mkdir -p "$MY_DATA"
        log "mariadb-install-db"
        # shellcheck disable=SC2046
        if ! "$MY_INSTALL" --no-defaults --datadir="$MY_DATA" --auth-root-authentication-method=normal \
            --skip-test-db --skip-name-resolve $(my_user_args) >"$MY_INSTALL_LOG" 2>&1; then
            die_log "$MY_INSTALL_LOG" "mariadb-install-db failed"
        fi
        touch "$MY_DIR/.initialized"
    fi

    port_open "$MYSQL_PORT" && die "port $MYSQL_PORT is already in use by something else (set FERRY_MYSQL_PORT)"
    log "starting MariaDB on $HOST:$MYSQL_PORT"
    rm -f "$MY_PID" "$MY_SRV_PID" "$MY_SOCK"
    # Detached in its own session, every fd away from our caller's pipes; the launcher
    # records its pid and then becomes mariadbd, so the pid is the server's.
    # shellcheck disable=SC2016,SC2046
    setsid bash -c "$CLOSE_FDS"'echo $$ >"$0"; exec "$@"' "$MY_PID" \
        "$MY_SERVER" --no-defaults --datadir="$MY_DATA" --port="$MYSQL_PORT" --bind-address="$HOST" \
        --socket="$MY_SOCK" --pid-file="$MY_SRV_PID" $(my_user_args) \
        --local-infile=1 --max-allowed-packet=256M --innodb-flush-log-at-trx-commit=0 \
        --innodb-buffer-pool-size=512M --skip-log-bin --skip-name-resolve \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
        --log-error="$MY_LOG" </dev/null >>"$MY_LOG" 2>&1 &
    local deadline=$((SECONDS + TIMEOUT)) pid
    while ! my_ping >/dev/null 2>&1; do
        pid=$(read_pid "$MY_PID")
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            die_log "$MY_LOG" "MariaDB exited during startup"
        fi
        [ "$SECONDS" -lt "$deadline" ] || die_log "$MY_LOG" "MariaDB did not answer on $HOST:$MYSQL_PORT within ${TIMEOUT}s"
        sleep 0.2
    done
    log "MariaDB on $HOST:$MYSQL_PORT ready"
    my_setup
}

# database and passwordless root over TCP; runs over our unix socket as root@localhost
my_setup() {
    local sql
    sql="CREATE DATABASE IF NOT EXISTS \`$DB\` CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'root'@'localhost' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'localhost' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'root'@'::1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'::1' WITH GRANT OPTION;
DROP USER IF EXISTS ''@'localhost';
DROP USER IF EXISTS ''@'$(hostname 2>/dev/null || echo localhost)';
FLUSH PRIVILEGES;"
    if ! "$MY_CLIENT" --no-defaults -S "$MY_SOCK" -uroot -e "$sql" >>"$MY_DIR/setup.log" 2>&1; then
        # the socket may be refused if root@localhost is socket-auth only; try TCP
        "$MY_CLIENT" --no-defaults --protocol=tcp -h"$HOST" -P"$MYSQL_PORT" -uroot -e "$sql" \
            >>"$MY_DIR/setup.log" 2>&1 || die_log "$MY_DIR/setup.log" "MariaDB setup (database $DB, root@$HOST) failed"
    fi
    "$MY_CLIENT" --no-defaults --protocol=tcp -h"$HOST" -P"$MYSQL_PORT" -uroot "$DB" -e 'SELECT 1' >/dev/null 2>&1 ||
        die_log "$MY_DIR/setup.log" "root cannot log in over TCP to $HOST:$MYSQL_PORT/$DB with an empty password"
}

my_down() {
    local pid
    pid=$(read_pid "$MY_PID")
    [ -n "$pid" ] || pid=$(read_pid "$MY_SRV_PID")
    [ -n "$pid" ] || return 0
    stop_pid "$pid" "$MY_DATA" MariaDB
}

# ---------------------------------------------------------------- etcd

ETCD_BIN="" ETCDCTL_BIN=""

etcd_running() { pid_is_ours "$(read_pid "$ETCD_PID")" "$ETCD_DATA"; }

etcd_healthy() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS --max-time 2 "$ETCD_ENDPOINTS/health" | grep -q '"health" *: *"true"'
    else
        ETCDCTL_API=3 "$ETCDCTL_BIN" --endpoints="$ETCD_ENDPOINTS" --dial-timeout=2s endpoint health
    fi
}

etcd_up() {
    ETCD_BIN=$(find_cmd etcd) || die "etcd not found"
    ETCDCTL_BIN=$(find_cmd etcdctl || true)
    if etcd_running; then
        wait_until "$TIMEOUT" "etcd on $ETCD_ENDPOINTS" etcd_healthy ||
            die_log "$ETCD_LOG" "our etcd runs but is not healthy on $ETCD_ENDPOINTS"
        return 0
    fi
    mkdir -p "$ETCD_DATA"
    chmod 700 "$ETCD_DATA"
    port_open "$ETCD_PORT" && die "port $ETCD_PORT is already in use by something else (set FERRY_ETCD_PORT)"
    port_open "$ETCD_PEER_PORT" && die "port $ETCD_PEER_PORT is already in use by something else (set FERRY_ETCD_PEER_PORT)"
    local extra=()
    if "$ETCD_BIN" --help 2>&1 | grep -q -- '--unsafe-no-fsync'; then
        extra+=(--unsafe-no-fsync)
    fi
    log "starting etcd on $ETCD_ENDPOINTS"
    rm -f "$ETCD_PID"
    # ETCD_* variables from the caller's environment would override our flags' defaults
    local unset_env=() v
    for v in $(compgen -e | grep '^ETCD_' || true); do unset_env+=(-u "$v"); done
    # shellcheck disable=SC2016
    setsid env "${unset_env[@]}" bash -c "$CLOSE_FDS"'echo $$ >"$0"; exec "$@"' "$ETCD_PID" \
        "$ETCD_BIN" --name ferry-test --data-dir "$ETCD_DATA" \
        --listen-client-urls "http://$HOST:$ETCD_PORT" --advertise-client-urls "http://$HOST:$ETCD_PORT" \
        --listen-peer-urls "http://$HOST:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://$HOST:$ETCD_PEER_PORT" \
        --initial-cluster "ferry-test=http://$HOST:$ETCD_PEER_PORT" --initial-cluster-state new \
        --initial-cluster-token ferry-test "${extra[@]}" \
        </dev/null >>"$ETCD_LOG" 2>&1 &
    local deadline=$((SECONDS + TIMEOUT)) pid
    while ! etcd_healthy >/dev/null 2>&1; do
        pid=$(read_pid "$ETCD_PID")
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            die_log "$ETCD_LOG" "etcd exited during startup"
        fi
        [ "$SECONDS" -lt "$deadline" ] || die_log "$ETCD_LOG" "etcd not healthy on $ETCD_ENDPOINTS within ${TIMEOUT}s"
        sleep 0.2
    done
    log "etcd on $ETCD_ENDPOINTS ready"
}

etcd_down() {
    local pid
    pid=$(read_pid "$ETCD_PID")
    [ -n "$pid" ] || return 0
    stop_pid "$pid" "$ETCD_DATA" etcd
}

# ---------------------------------------------------------------- ClickHouse and ZooKeeper
# Two Debian clickhouse-server processes, each from a copy of the packaged config.xml and
# users.xml with our paths and ports in config.d/ferry.xml, replicas of one shard in the
# cluster ferry_test (macros {shard}/{replica}), replicating through our ZooKeeper.

ZK_DIR=$STATE_DIR/zookeeper
ZK_PID=$ZK_DIR/zookeeper.pid
ZK_LOG=$ZK_DIR/zookeeper.log
ZK_JAR=/usr/share/java/zookeeper.jar

ch_dir() { echo "$STATE_DIR/clickhouse-$1"; }
ch_http_port() { if [ "$1" = 1 ]; then echo "$CH1_HTTP_PORT"; else echo "$CH2_HTTP_PORT"; fi; }
ch_tcp_port() { if [ "$1" = 1 ]; then echo "$CH1_TCP_PORT"; else echo "$CH2_TCP_PORT"; fi; }
ch_inter_port() { if [ "$1" = 1 ]; then echo "$CH1_INTER_PORT"; else echo "$CH2_INTER_PORT"; fi; }

# appends to ensure_packages' `missing`
ch_missing_packages() {
    find_cmd clickhouse-server >/dev/null || missing+=(clickhouse-server)
    find_cmd clickhouse-client >/dev/null || missing+=(clickhouse-client)
    { [ -f "$ZK_JAR" ] && find_cmd java >/dev/null; } || missing+=(zookeeper)
}

zk_running() { pid_is_ours "$(read_pid "$ZK_PID")" "$ZK_DIR"; }

zk_ok() { [ "$( (exec 3<>"/dev/tcp/$HOST/$ZK_PORT" && printf ruok >&3 && cat <&3) 2>/dev/null)" = imok ]; }

zk_up() {
    if zk_running; then
        wait_until "$TIMEOUT" "ZooKeeper on $HOST:$ZK_PORT" zk_ok ||
            die_log "$ZK_LOG" "our ZooKeeper runs but does not answer on $HOST:$ZK_PORT"
        return 0
    fi
    local java
    java=$(find_cmd java) || die "java not found (Debian package default-jre-headless)"
    mkdir -p "$ZK_DIR/data"
    port_open "$ZK_PORT" && die "port $ZK_PORT is already in use by something else (set FERRY_ZK_PORT)"
    cat >"$ZK_DIR/zoo.cfg" <<CFG
tickTime=500
initLimit=10
syncLimit=5
dataDir=$ZK_DIR/data
clientPort=$ZK_PORT
clientPortAddress=$HOST
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr
forceSync=no
CFG
    log "starting ZooKeeper on $HOST:$ZK_PORT"
    rm -f "$ZK_PID"
    # shellcheck disable=SC2016
    setsid bash -c "$CLOSE_FDS"'echo $$ >"$0"; exec "$@"' "$ZK_PID" \
        "$java" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Dzookeeper.log.dir="$ZK_DIR" \
        -Dzookeeper.root.logger=WARN,CONSOLE -Dlog4j.configuration=file:/etc/zookeeper/conf/log4j.properties \
        -cp "/etc/zookeeper/conf:$ZK_JAR:/usr/share/java/log4j-1.2.jar:/usr/share/java/slf4j-log4j12.jar" \
        org.apache.zookeeper.server.ZooKeeperServerMain "$ZK_DIR/zoo.cfg" \
        </dev/null >>"$ZK_LOG" 2>&1 &
    local deadline=$((SECONDS + TIMEOUT)) pid
    while ! zk_ok; do
        pid=$(read_pid "$ZK_PID")
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            die_log "$ZK_LOG" "ZooKeeper exited during startup"
        fi
        [ "$SECONDS" -lt "$deadline" ] || die_log "$ZK_LOG" "ZooKeeper did not answer on $HOST:$ZK_PORT within ${TIMEOUT}s"
        sleep 0.1
    done
    log "ZooKeeper on $HOST:$ZK_PORT ready"
}

zk_down() {
    local pid
    pid=$(read_pid "$ZK_PID")
    [ -n "$pid" ] || return 0
    stop_pid "$pid" "$ZK_DIR" ZooKeeper
}

ch_running() { pid_is_ours "$(read_pid "$(ch_dir "$1")/clickhouse.pid")" "$(ch_dir "$1")"; }

ch_ping() { curl -fsS --max-time 2 "http://$HOST:$(ch_http_port "$1")/ping" | grep -q '^Ok'; }

ch_query() { # N SQL: runs SQL on server N over HTTP
    curl -fsS --max-time "$TIMEOUT" --data-binary "$2" "http://$HOST:$(ch_http_port "$1")/"
}

ch_write_config() { # N: config.xml and users.xml copied, our settings in config.d/ferry.xml
    local n=$1 dir
    dir=$(ch_dir "$n")
    mkdir -p "$dir/data" "$dir/config.d"
    cp /etc/clickhouse-server/config.xml /etc/clickhouse-server/users.xml "$dir/"
    cat >"$dir/config.d/ferry.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger replace="replace">
        <level>warning</level>
        <log>$dir/clickhouse-server.log</log>
        <errorlog>$dir/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>1</count>
    </logger>
    <http_port>$(ch_http_port "$n")</http_port>
    <tcp_port>$(ch_tcp_port "$n")</tcp_port>
    <interserver_http_port>$(ch_inter_port "$n")</interserver_http_port>
    <interserver_http_host>$HOST</interserver_http_host>
    <listen_host replace="replace">$HOST</listen_host>
    <path>$dir/data/</path>
    <tmp_path>$dir/data/tmp/</tmp_path>
    <user_files_path>$dir/data/user_files/</user_files_path>
    <format_schema_path>$dir/data/format_schemas/</format_schema_path>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <remote_servers replace="replace">
        <ferry_test>
            <shard>
                <internal_replication>true</internal_replication>
                <replica><host>$HOST</host><port>$CH1_TCP_PORT</port></replica>
                <replica><host>$HOST</host><port>$CH2_TCP_PORT</port></replica>
            </shard>
        </ferry_test>
    </remote_servers>
    <zookeeper replace="replace">
        <node><host>$HOST</host><port>$ZK_PORT</port></node>
        <session_timeout_ms>10000</session_timeout_ms>
    </zookeeper>
    <macros replace="replace">
        <shard>01</shard>
        <replica>ch$n</replica>
    </macros>
    <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
</yandex>
XML
    # 18.16: LowCardinality is experimental, and ON CLUSTER DDL runs on the other hosts
    # with their profile's settings, not the query's.
    mkdir -p "$dir/users.d"
    cat >"$dir/users.d/ferry.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles><default><allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type></default></profiles>
</yandex>
XML
}

ch_up() { # N
    local n=$1 dir server pid http
    dir=$(ch_dir "$n")
    http=$(ch_http_port "$n")
    if ch_running "$n"; then
        ch_write_config "$n" # the server reloads it
        wait_until "$TIMEOUT" "ClickHouse $n on $HOST:$http" ch_ping "$n" ||
            die_log "$dir/clickhouse-server.err.log" "our ClickHouse $n runs but does not answer on $HOST:$http"
        ch_query "$n" "CREATE DATABASE IF NOT EXISTS $DB" >/dev/null
        return 0
    fi
    server=$(find_cmd clickhouse-server) || die "clickhouse-server not found"
    local port
    for port in "$http" "$(ch_tcp_port "$n")" "$(ch_inter_port "$n")"; do
        port_open "$port" && die "port $port is already in use by something else (see FERRY_CH*_PORT)"
    done
    ch_write_config "$n"
    log "starting ClickHouse $n on $HOST:$http"
    local deadline=$((SECONDS + TIMEOUT)) tries=0
    ch_launch "$n" "$server"
    while ! ch_ping "$n" >/dev/null 2>&1; do
        pid=$(read_pid "$dir/clickhouse.pid")
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            # Our ports lie in Linux's ephemeral range (32768-60999): an outgoing
            # connection may hold one for a moment. Try again rather than fail.
            if grep -q 'Address already in use' "$dir/clickhouse-server.err.log" 2>/dev/null && [ "$tries" -lt 5 ]; then
                tries=$((tries + 1))
                log "ClickHouse $n: a port was taken for a moment; starting again ($tries)"
                : >"$dir/clickhouse-server.err.log"
                sleep 1
                ch_launch "$n" "$server"
                continue
            fi
            die_log "$dir/clickhouse-server.err.log" "ClickHouse $n exited during startup (see also $dir/stdout.log)"
        fi
        [ "$SECONDS" -lt "$deadline" ] || die_log "$dir/clickhouse-server.err.log" "ClickHouse $n did not answer on $HOST:$http within ${TIMEOUT}s"
        sleep 0.1
    done
    ch_query "$n" "CREATE DATABASE IF NOT EXISTS $DB" >/dev/null ||
        die_log "$dir/clickhouse-server.err.log" "CREATE DATABASE $DB failed on ClickHouse $n"
    log "ClickHouse $n on $HOST:$http ready"
}

ch_launch() { # N SERVER: detached, every fd away from our caller's pipes
    local dir
    dir=$(ch_dir "$1")
    rm -f "$dir/clickhouse.pid"
    # shellcheck disable=SC2016
    setsid bash -c "$CLOSE_FDS"'echo $$ >"$0"; cd "$1" && shift && exec "$@"' "$dir/clickhouse.pid" "$dir" \
        "$2" --config-file="$dir/config.xml" </dev/null >>"$dir/stdout.log" 2>&1 &
}

ch_down() { # N
    local dir pid
    dir=$(ch_dir "$1")
    pid=$(read_pid "$dir/clickhouse.pid")
    [ -n "$pid" ] || return 0
    stop_pid "$pid" "$dir" "ClickHouse $1"
}

# The ClickHouse side of `up`: ZooKeeper and both servers at once.
clickhouse_up() {
    local pids=() pid failed=0
    zk_up &
    pids+=($!)
    ch_up 1 &
    pids+=($!)
    ch_up 2 &
    pids+=($!)
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    [ "$failed" = 0 ] || die "ClickHouse or ZooKeeper did not start (see above)"
}

clickhouse_down() {
    ch_down 2 &
    ch_down 1 &
    wait
    zk_down
}

clickhouse_env() {
    echo "export FERRY_TEST_CLICKHOUSE_URL='$CH1_URL'"
    echo "export FERRY_TEST_CLICKHOUSE_URL_2='$CH2_URL'"
}

clickhouse_status() { # returns 1 when one is stopped
    local ok=0 n
    for n in 1 2; do
        if ch_running "$n"; then
            echo "clickhouse-$n: running (pid $(read_pid "$(ch_dir "$n")/clickhouse.pid")) http://$HOST:$(ch_http_port "$n")"
        else
            echo "clickhouse-$n: stopped"
            ok=1
        fi
    done
    if zk_running; then
        echo "zookeeper:  running (pid $(read_pid "$ZK_PID")) $HOST:$ZK_PORT"
    else
        echo "zookeeper:  stopped"
        ok=1
    fi
    return "$ok"
}

# ---------------------------------------------------------------- commands

# one up/down at a time (make test and make bench may race); the lock lives beside the dir
take_lock() {
    local lock="${STATE_DIR%/}.lock"
    if ! { exec 9>>"$lock"; } 2>/dev/null; then
        log "cannot open $lock (another user's?): going on without the lock"
        return 0
    fi
    if command -v flock >/dev/null 2>&1; then
        flock -w "$((TIMEOUT * 5))" 9 || die "timed out waiting for $lock (another services.sh up/down?)"
    fi
}

# Our ports lie in Linux's ephemeral range (32768-60999): an outgoing connection (a
# server's ZooKeeper session, a readiness probe) may be given one of them just before its
# server binds it, now that the servers start at once. Reserve them so the kernel does
# not hand them out (best effort: needs root and a writable /proc/sys).
reserve_ports() {
    local file=/proc/sys/net/ipv4/ip_local_reserved_ports current ours
    [ -w "$file" ] || return 0
    ours="$PG_PORT,$MYSQL_PORT,$ETCD_PORT,$ETCD_PEER_PORT,$ZK_PORT"
    ours="$ours,$CH1_HTTP_PORT,$CH2_HTTP_PORT,$CH1_TCP_PORT,$CH2_TCP_PORT,$CH1_INTER_PORT,$CH2_INTER_PORT"
    current=$(cat "$file" 2>/dev/null || true)
    echo "${current:+$current,}$ours" >"$file" 2>/dev/null || true
}

cmd_up() {
    take_lock
    ensure_packages
    reserve_ports
    mkdir -p "$STATE_DIR"
    chmod 755 "$STATE_DIR"
    local t0=$SECONDS pids=() pid failed=0
    # each in its own subshell, all at once: a failure dies there and is collected here
    pg_up &
    pids+=($!)
    my_up &
    pids+=($!)
    etcd_up &
    pids+=($!)
    clickhouse_up &
    pids+=($!)
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    [ "$failed" = 0 ] || die "a service did not start (see above)"
    log "all up in $((SECONDS - t0))s (state in $STATE_DIR)"
    log "  FERRY_TEST_PG_URL=$PG_URL"
    log "  FERRY_TEST_MYSQL_URL=$MYSQL_URL"
    log "  FERRY_TEST_ETCD_ENDPOINTS=$ETCD_ENDPOINTS"
    log "  FERRY_TEST_CLICKHOUSE_URL=$CH1_URL"
    log "  FERRY_TEST_CLICKHOUSE_URL_2=$CH2_URL"
}

cmd_down() {
    take_lock
    if [ -d "$STATE_DIR" ]; then
        clickhouse_down
        etcd_down
        my_down
        pg_down
        rm -rf "$STATE_DIR"
        log "removed $STATE_DIR"
    else
        log "nothing to stop ($STATE_DIR does not exist)"
    fi
}

# kill pg|mysql: SIGKILL our server (an outage for the tests; the data stays, but these
#   servers run with relaxed durability for speed, so their last commits may be lost).
# stop pg|mysql: a clean shutdown (every commit kept).
# start pg|mysql: starts it again (crash recovery included) and waits until it answers.
kill_ours() { # pid data-dir name: SIGKILL, and wait until it is gone
    local pid=$1
    pid_is_ours "$pid" "$2" || die "our $3 is not running"
    kill -9 "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    log "$3 killed (pid $pid)"
}

cmd_outage() {
    local action=$1 service=${2:-}
    take_lock
    case "$action:$service" in
    kill:pg) kill_ours "$(read_pid "$PG_DATA/postmaster.pid")" "$PG_DATA" PostgreSQL ;;
    kill:mysql) kill_ours "$(read_pid "$MY_PID")" "$MY_DATA" MariaDB ;;
    stop:pg) pg_down ;;
    stop:mysql) my_down ;;
    start:pg) pg_up ;;
    start:mysql) my_up ;;
    *)
        echo "usage: $0 kill|stop|start pg|mysql" >&2
        exit 2
        ;;
    esac
}

cmd_env() {
    echo "export FERRY_TEST_PG_URL='$PG_URL'"
    echo "export FERRY_TEST_MYSQL_URL='$MYSQL_URL'"
    echo "export FERRY_TEST_ETCD_ENDPOINTS='$ETCD_ENDPOINTS'"
    clickhouse_env
}

cmd_status() {
    local ok=0 pid
    if pg_running; then
        echo "postgresql: running (pid $(read_pid "$PG_DATA/postmaster.pid")) $PG_URL"
    else
        echo "postgresql: stopped"
        ok=1
    fi
    if my_running; then
        echo "mariadb:    running (pid $(read_pid "$MY_PID")) $MYSQL_URL"
    else
        echo "mariadb:    stopped"
        ok=1
    fi
    if etcd_running; then
        pid=$(read_pid "$ETCD_PID")
        echo "etcd:       running (pid $pid) $ETCD_ENDPOINTS"
    else
        echo "etcd:       stopped"
        ok=1
    fi
    clickhouse_status || ok=1
    echo "state dir:  $STATE_DIR"
    return "$ok"
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
env) cmd_env ;;
status) cmd_status ;;
kill | stop | start) cmd_outage "$1" "${2:-}" ;;
*)
    echo "usage: $0 up|down|env|status|kill|stop|start pg|mysql" >&2
    exit 2
    ;;
esac
