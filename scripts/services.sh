#!/usr/bin/env bash
# Real, hermetic database services for the tests, on loopback only:
# PostgreSQL, MariaDB and etcd, each our own instance in a throwaway state directory,
# plus a TLS-only PostgreSQL and a TLS-only MariaDB (certificates from a test CA made
# here with openssl, in $STATE_DIR/tls), an etcd with client-certificate TLS and
# authentication, two ClickHouse servers (replicas of one shard, cluster ferry_test) and
# the ZooKeeper they replicate through.
#
#   scripts/services.sh up       install what is missing (Debian packages), start them all
#                                in parallel (a no-op for what already runs), create
#                                database ferry_test
#   scripts/services.sh down     stop only what we started (by our pid files), remove the state dir
#   scripts/services.sh env      print shell exports: eval "$(scripts/services.sh env)"
#   scripts/services.sh status   say what runs (exit 0 only when all of them do)
#
# The TLS instances refuse plaintext (PostgreSQL: `hostnossl ... reject`; MariaDB:
# require_secure_transport), serve a certificate that names only `localhost` (so a client
# dialling 127.0.0.1 with full verification sees a certificate for another name), and
# have a user ferry_cert that must present a client certificate. $STATE_DIR/tls holds
# ca.crt (the CA that signed the servers' and the client's certificates), other-ca.crt
# (an unrelated CA), server.crt/.key, client.crt/.key (CN ferry_cert).
#
# Environment (all optional):
#   FERRY_SERVICES_DIR      state dir                   (default /tmp/ferry-services)
#   FERRY_PG_PORT           PostgreSQL port             (default 55432)
#   FERRY_PG_TLS_PORT       TLS-only PostgreSQL port    (default 55442)
#   FERRY_MYSQL_PORT        MariaDB port                (default 53306)
#   FERRY_MYSQL_TLS_PORT    TLS-only MariaDB port       (default 53316)
#   FERRY_ETCD_PORT         etcd client port            (default 52379)
#   FERRY_ETCD_PEER_PORT    etcd peer port              (default 52380)
#   FERRY_ETCD_TLS_PORT     TLS + authentication etcd   (default 52389; peer port +1)
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
PG_PLAIN_PORT=${FERRY_PG_PORT:-55432}
PG_TLS_PORT=${FERRY_PG_TLS_PORT:-55442}
MYSQL_PLAIN_PORT=${FERRY_MYSQL_PORT:-53306}
MYSQL_TLS_PORT=${FERRY_MYSQL_TLS_PORT:-53316}
ETCD_PORT=${FERRY_ETCD_PORT:-52379}
ETCD_PEER_PORT=${FERRY_ETCD_PEER_PORT:-52380}
ETCD_TLS_PORT=${FERRY_ETCD_TLS_PORT:-52389}
ETCD_TLS_PEER_PORT=$((ETCD_TLS_PORT + 1))
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

TLS_DIR=$STATE_DIR/tls
TLS_USER=ferry_cert # the user that must present a client certificate
TLS_HOST=localhost  # the only name in the TLS servers' certificate

# Each PostgreSQL and MariaDB function works on the instance chosen last by pg_instance
# or my_instance (plain or tls): its dir, port and name.
pg_instance() {
    case $1 in
    plain) PG_DIR=$STATE_DIR/pg PG_PORT=$PG_PLAIN_PORT PG_PORT_VAR=FERRY_PG_PORT PG_TLS=0 PG_NAME=PostgreSQL ;;
    tls) PG_DIR=$STATE_DIR/pg-tls PG_PORT=$PG_TLS_PORT PG_PORT_VAR=FERRY_PG_TLS_PORT PG_TLS=1 PG_NAME="PostgreSQL (TLS)" ;;
    esac
    PG_DATA=$PG_DIR/data
    PG_SOCK=$PG_DIR/run
    PG_LOG=$PG_DIR/postgres.log
}

my_instance() {
    case $1 in
    plain) MY_DIR=$STATE_DIR/mariadb MYSQL_PORT=$MYSQL_PLAIN_PORT MY_PORT_VAR=FERRY_MYSQL_PORT MY_TLS=0 MY_NAME=MariaDB ;;
    tls) MY_DIR=$STATE_DIR/mariadb-tls MYSQL_PORT=$MYSQL_TLS_PORT MY_PORT_VAR=FERRY_MYSQL_TLS_PORT MY_TLS=1 MY_NAME="MariaDB (TLS)" ;;
    esac
    MY_DATA=$MY_DIR/data
    MY_SOCK=$MY_DIR/mariadb.sock
    MY_PID=$MY_DIR/mariadb.pid      # written by our launcher (same pid as mariadbd's own)
    MY_SRV_PID=$MY_DIR/mariadbd.pid # written by mariadbd
    MY_LOG=$MY_DIR/mariadb.log
    MY_INSTALL_LOG=$MY_DIR/install-db.log
}
pg_instance plain
my_instance plain

ETCD_DIR=$STATE_DIR/etcd
ETCD_DATA=$ETCD_DIR/data
ETCD_PID=$ETCD_DIR/etcd.pid
ETCD_LOG=$ETCD_DIR/etcd.log

# A second etcd with client-certificate TLS and authentication (user ferry, whose role
# may read and write /ferry/), for the security tests. Certificates by openssl.
ETCD_TLS_DIR=$STATE_DIR/etcd-tls
ETCD_TLS_DATA=$ETCD_TLS_DIR/data
ETCD_TLS_PID=$ETCD_TLS_DIR/etcd.pid
ETCD_TLS_LOG=$ETCD_TLS_DIR/etcd.log
ETCD_TLS_CERTS=$ETCD_TLS_DIR/certs
ETCD_TLS_ENDPOINTS="https://localhost:$ETCD_TLS_PORT"

PG_URL="postgres://postgres@$HOST:$PG_PLAIN_PORT/$DB"
MYSQL_URL="mysql://root@$HOST:$MYSQL_PLAIN_PORT/$DB"
PG_TLS_URL="postgres://postgres@$TLS_HOST:$PG_TLS_PORT/$DB"
MYSQL_TLS_URL="mysql://root@$TLS_HOST:$MYSQL_TLS_PORT/$DB"
ETCD_ENDPOINTS="http://$HOST:$ETCD_PORT"
CH1_URL="http://default@$HOST:$CH1_HTTP_PORT/$DB"
CH2_URL="http://default@$HOST:$CH2_HTTP_PORT/$DB"
# A test password (not a secret): the ferry_pull user of the ClickHouse servers.
CH_PULL_PASSWORD=pull-pw-7f3a9c
CH_PULL_URL="http://ferry_pull:$CH_PULL_PASSWORD@$HOST:$CH1_HTTP_PORT/$DB"

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
    find_cmd openssl >/dev/null || missing+=(openssl)
    find_cmd prometheus >/dev/null || missing+=(prometheus)
    # Headless Chromium and its WebDriver, for the web console's tests (tests/tests/console.rs).
    find_cmd chromium >/dev/null || missing+=(chromium)
    find_cmd chromedriver >/dev/null || missing+=(chromium-driver)
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

# ---------------------------------------------------------------- test certificates

# tls_cert NAME SUBJECT EXTENSIONS [CA]: an EC P-256 key and a certificate, self-signed
# (a CA) without CA, else signed by CA; 10 years.
tls_cert() {
    local name=$1 subject=$2 ext=$3 ca=${4:-}
    local key=$TLS_DIR/$name.key crt=$TLS_DIR/$name.crt
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$key" 2>>"$TLS_DIR/openssl.log"
    chmod 600 "$key"
    printf '%b\n' "$ext" >"$TLS_DIR/$name.ext"
    if [ -z "$ca" ]; then
        openssl req -x509 -new -key "$key" -subj "$subject" -days 3650 -sha256 \
            -extensions v3 -config <(printf '[req]\ndistinguished_name=dn\n[dn]\n[v3]\n%b\n' "$ext") \
            -out "$crt" 2>>"$TLS_DIR/openssl.log"
    else
        openssl req -new -key "$key" -subj "$subject" -out "$TLS_DIR/$name.csr" 2>>"$TLS_DIR/openssl.log" &&
            openssl x509 -req -in "$TLS_DIR/$name.csr" -CA "$TLS_DIR/$ca.crt" -CAkey "$TLS_DIR/$ca.key" \
                -CAcreateserial -days 3650 -sha256 -extfile "$TLS_DIR/$name.ext" -out "$crt" 2>>"$TLS_DIR/openssl.log"
    fi
}

# The test CA, an unrelated CA, the servers' certificate (localhost only) and the
# client certificate of TLS_USER; made once per state dir.
tls_certs() {
    [ -f "$TLS_DIR/.done" ] && return 0
    rm -rf "$TLS_DIR"
    mkdir -p "$TLS_DIR"
    local ca='basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign'
    local leaf='basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature'
    { tls_cert ca "/CN=ferry test CA" "$ca" &&
        tls_cert other-ca "/CN=ferry unrelated test CA" "$ca" &&
        tls_cert server "/CN=$TLS_HOST" "$leaf\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:$TLS_HOST" ca &&
        tls_cert client "/CN=$TLS_USER" "$leaf\nextendedKeyUsage=clientAuth" ca; } ||
        die_log "$TLS_DIR/openssl.log" "openssl could not make the test certificates in $TLS_DIR"
    chmod 755 "$TLS_DIR"
    chmod 644 "$TLS_DIR"/*.crt
    touch "$TLS_DIR/.done"
    log "test CA and certificates in $TLS_DIR"
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

# the user that owns and runs our clusters (root: the system user postgres, made here)
pg_owner() {
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
}

# The TLS instance's certificate files (the key readable by the cluster's owner only)
# and its pg_hba.conf: plaintext refused, TLS_USER by client certificate, others trusted.
pg_tls_setup() {
    cp "$TLS_DIR/server.crt" "$TLS_DIR/server.key" "$TLS_DIR/ca.crt" "$PG_DIR/"
    chmod 600 "$PG_DIR/server.key"
    [ "$PG_OWNER" = postgres ] && is_root && chown postgres: "$PG_DIR/server.crt" "$PG_DIR/server.key" "$PG_DIR/ca.crt"
    cat >"$PG_DATA/pg_hba.conf" <<HBA
local     all  all                       trust
hostnossl all  all           0.0.0.0/0   reject
hostnossl all  all           ::/0        reject
hostssl   all  $TLS_USER     127.0.0.1/32 cert
hostssl   all  $TLS_USER     ::1/128     cert
hostssl   all  all           127.0.0.1/32 trust
hostssl   all  all           ::1/128     trust
HBA
}

pg_up() {
    PG_BIN=$(find_pg_bin)
    pg_owner

    if pg_running; then
        wait_until "$TIMEOUT" "$PG_NAME on $HOST:$PG_PORT" pg_ready ||
            die_log "$PG_LOG" "our $PG_NAME runs but does not accept connections on $HOST:$PG_PORT"
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
        [ "$PG_TLS" = 1 ] && pg_tls_setup
        touch "$PG_DIR/.initialized"
    fi

    port_open "$PG_PORT" && die "port $PG_PORT is already in use by something else (set $PG_PORT_VAR)"
    local options="-p $PG_PORT -k $PG_SOCK -c listen_addresses=$HOST -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    if [ "$PG_TLS" = 1 ]; then
        options+=" -c ssl=on -c ssl_cert_file=$PG_DIR/server.crt -c ssl_key_file=$PG_DIR/server.key -c ssl_ca_file=$PG_DIR/ca.crt"
    fi
    log "starting $PG_NAME on $HOST:$PG_PORT"
    if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -o "$options" \
        -l "$PG_LOG" -w -t "$TIMEOUT" start >"$PG_DIR/pg_ctl.log" 2>&1; then
        cat "$PG_DIR/pg_ctl.log" >&2 || true
        die_log "$PG_LOG" "$PG_NAME did not start within ${TIMEOUT}s"
    fi
    wait_until "$TIMEOUT" "$PG_NAME on $HOST:$PG_PORT" pg_ready ||
        die_log "$PG_LOG" "$PG_NAME does not accept connections on $HOST:$PG_PORT"
    pg_create_db
}

# over the unix socket: the TLS instance refuses plaintext TCP
pg_psql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres "$@"; }

pg_create_db() {
    local have
    have=$(pg_psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'") ||
        die_log "$PG_LOG" "cannot query our PostgreSQL"
    if [ "$have" != 1 ]; then
        pg_psql -d postgres -c "CREATE DATABASE $DB ENCODING 'UTF8' TEMPLATE template0" ||
            die_log "$PG_LOG" "CREATE DATABASE $DB failed on $PG_NAME"
    fi
    if [ "$PG_TLS" = 1 ]; then
        pg_psql -d "$DB" -c "DO \$\$ BEGIN CREATE ROLE $TLS_USER LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$;
GRANT ALL ON DATABASE $DB TO $TLS_USER; GRANT ALL ON SCHEMA public TO $TLS_USER;" ||
            die_log "$PG_LOG" "creating user $TLS_USER failed on $PG_NAME"
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
        log "$PG_NAME stopped"
    else
        stop_pid "$pid" "$PG_DATA" "$PG_NAME"
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

# client arguments for TCP: the TLS instance takes TLS connections only
my_tcp_args() {
    echo "--protocol=tcp -h$HOST -P$MYSQL_PORT"
    [ "$MY_TLS" = 1 ] && echo "--ssl --ssl-ca=$TLS_DIR/ca.crt" || true
}

# shellcheck disable=SC2046
my_ping() { "$MY_ADMIN" --no-defaults $(my_tcp_args) -uroot --connect-timeout=2 ping; }

my_user_args() { is_root && echo "--user=root" || true; }

my_up() {
    my_bins
    if my_running; then
        wait_until "$TIMEOUT" "$MY_NAME on $HOST:$MYSQL_PORT" my_ping ||
            die_log "$MY_LOG" "our $MY_NAME runs but does not answer on $HOST:$MYSQL_PORT"
        my_setup
        return 0
    fi

    if [ ! -f "$MY_DIR/.initialized" ]; then
        # Each instance bootstraps with a temporary folder of its own: two installs at once
        # (the plain and the TLS instance) sharing /tmp once collided on a temporary table.
        local attempt
        for attempt in 1 2; do
            rm -rf "$MY_DIR"
            mkdir -p "$MY_DATA" "$MY_DIR/tmp"
            log "mariadb-install-db"
            # shellcheck disable=SC2046
            if "$MY_INSTALL" --no-defaults --datadir="$MY_DATA" --tmpdir="$MY_DIR/tmp" \
                --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
                $(my_user_args) >"$MY_INSTALL_LOG" 2>&1; then
                break
            fi
            [ "$attempt" = 2 ] && die_log "$MY_INSTALL_LOG" "mariadb-install-db failed"
            log "mariadb-install-db failed; once more"
        done
        touch "$MY_DIR/.initialized"
    fi

    mkdir -p "$MY_DIR/tmp" # state folders made before it had one
    port_open "$MYSQL_PORT" && die "port $MYSQL_PORT is already in use by something else (set $MY_PORT_VAR)"
    local tls=()
    if [ "$MY_TLS" = 1 ]; then
        tls=(--ssl-cert="$TLS_DIR/server.crt" --ssl-key="$TLS_DIR/server.key" --ssl-ca="$TLS_DIR/ca.crt"
            --require-secure-transport=ON)
    fi
    log "starting $MY_NAME on $HOST:$MYSQL_PORT"
    rm -f "$MY_PID" "$MY_SRV_PID" "$MY_SOCK"
    # Detached in its own session, every fd away from our caller's pipes; the launcher
    # records its pid and then becomes mariadbd, so the pid is the server's.
    # shellcheck disable=SC2016,SC2046
    setsid bash -c "$CLOSE_FDS"'echo $$ >"$0"; exec "$@"' "$MY_PID" \
        "$MY_SERVER" --no-defaults --datadir="$MY_DATA" --tmpdir="$MY_DIR/tmp" --port="$MYSQL_PORT" --bind-address="$HOST" \
        --socket="$MY_SOCK" --pid-file="$MY_SRV_PID" $(my_user_args) \
        --local-infile=1 --max-allowed-packet=256M --innodb-flush-log-at-trx-commit=0 \
        --innodb-buffer-pool-size=512M --skip-log-bin --skip-name-resolve \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci "${tls[@]}" \
        --log-error="$MY_LOG" </dev/null >>"$MY_LOG" 2>&1 &
    local deadline=$((SECONDS + TIMEOUT)) pid
    while ! my_ping >/dev/null 2>&1; do
        pid=$(read_pid "$MY_PID")
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            die_log "$MY_LOG" "$MY_NAME exited during startup"
        fi
        [ "$SECONDS" -lt "$deadline" ] || die_log "$MY_LOG" "$MY_NAME did not answer on $HOST:$MYSQL_PORT within ${TIMEOUT}s"
        sleep 0.2
    done
    log "$MY_NAME on $HOST:$MYSQL_PORT ready"
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
DROP USER IF EXISTS ''@'$(hostname 2>/dev/null || echo localhost)';"
    if [ "$MY_TLS" = 1 ]; then
        sql+="
CREATE USER IF NOT EXISTS '$TLS_USER'@'127.0.0.1' REQUIRE X509;
GRANT ALL PRIVILEGES ON *.* TO '$TLS_USER'@'127.0.0.1';
CREATE USER IF NOT EXISTS '$TLS_USER'@'::1' REQUIRE X509;
GRANT ALL PRIVILEGES ON *.* TO '$TLS_USER'@'::1';"
    fi
    sql+="
FLUSH PRIVILEGES;"
    if ! "$MY_CLIENT" --no-defaults -S "$MY_SOCK" -uroot -e "$sql" >>"$MY_DIR/setup.log" 2>&1; then
        # the socket may be refused if root@localhost is socket-auth only; try TCP
        # shellcheck disable=SC2046
        "$MY_CLIENT" --no-defaults $(my_tcp_args) -uroot -e "$sql" \
            >>"$MY_DIR/setup.log" 2>&1 || die_log "$MY_DIR/setup.log" "$MY_NAME setup (database $DB, root@$HOST) failed"
    fi
    # shellcheck disable=SC2046
    "$MY_CLIENT" --no-defaults $(my_tcp_args) -uroot "$DB" -e 'SELECT 1' >/dev/null 2>&1 ||
        die_log "$MY_DIR/setup.log" "root cannot log in over TCP to $HOST:$MYSQL_PORT/$DB with an empty password"
}

my_down() {
    local pid
    pid=$(read_pid "$MY_PID")
    [ -n "$pid" ] || pid=$(read_pid "$MY_SRV_PID")
    [ -n "$pid" ] || return 0
    stop_pid "$pid" "$MY_DATA" "$MY_NAME"
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

etcd_tools() {
    ETCD_BIN=$(find_cmd etcd) || die "etcd not found"
    ETCDCTL_BIN=$(find_cmd etcdctl || true)
}

# etcd_launch NAME DATA PIDFILE LOG CLIENT_URL PEER_URL [extra etcd flags...]: starts one
# etcd of ours in the background.
etcd_launch() {
    local name=$1 data=$2 pidfile=$3 logfile=$4 client=$5 peer=$6
    shift 6
    mkdir -p "$data"
    chmod 700 "$data"
    local extra=()
    if "$ETCD_BIN" --help 2>&1 | grep -q -- '--unsafe-no-fsync'; then
        extra+=(--unsafe-no-fsync)
    fi
    rm -f "$pidfile"
    # ETCD_* variables from the caller's environment would override our flags' defaults
    local unset_env=() v
    for v in $(compgen -e | grep '^ETCD_' || true); do unset_env+=(-u "$v"); done
    # shellcheck disable=SC2016
    setsid env "${unset_env[@]}" bash -c "$CLOSE_FDS"'echo $$ >"$0"; exec "$@"' "$pidfile" \
        "$ETCD_BIN" --name "$name" --data-dir "$data" \
        --listen-client-urls "$client" --advertise-client-urls "$client" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "$name=$peer" --initial-cluster-state new \
        --initial-cluster-token "$name" "${extra[@]}" "$@" \
        </dev/null >>"$logfile" 2>&1 &
}

# etcd_wait PIDFILE LOG WHAT CHECK...: waits until CHECK succeeds, or the process died.
etcd_wait() {
    local pidfile=$1 logfile=$2 what=$3
    shift 3
    local deadline=$((SECONDS + TIMEOUT)) pid
    while ! "$@" >/dev/null 2>&1; do
        pid=$(read_pid "$pidfile")
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            die_log "$logfile" "$what exited during startup"
        fi
        [ "$SECONDS" -lt "$deadline" ] || die_log "$logfile" "$what not healthy within ${TIMEOUT}s"
        sleep 0.2
    done
}

etcd_up() {
    etcd_tools
    if etcd_running; then
        wait_until "$TIMEOUT" "etcd on $ETCD_ENDPOINTS" etcd_healthy ||
            die_log "$ETCD_LOG" "our etcd runs but is not healthy on $ETCD_ENDPOINTS"
        return 0
    fi
    port_open "$ETCD_PORT" && die "port $ETCD_PORT is already in use by something else (set FERRY_ETCD_PORT)"
    port_open "$ETCD_PEER_PORT" && die "port $ETCD_PEER_PORT is already in use by something else (set FERRY_ETCD_PEER_PORT)"
    log "starting etcd on $ETCD_ENDPOINTS"
    etcd_launch ferry-test "$ETCD_DATA" "$ETCD_PID" "$ETCD_LOG" \
        "http://$HOST:$ETCD_PORT" "http://$HOST:$ETCD_PEER_PORT"
    etcd_wait "$ETCD_PID" "$ETCD_LOG" "etcd on $ETCD_ENDPOINTS" etcd_healthy
    log "etcd on $ETCD_ENDPOINTS ready"
}

# ---------------------------------------------------------------- etcd with TLS and auth

etcd_tls_running() { pid_is_ours "$(read_pid "$ETCD_TLS_PID")" "$ETCD_TLS_DATA"; }

etcdctl_tls() { # etcdctl against the TLS etcd, as root (after auth is on) or by certificate
    local c=$ETCD_TLS_CERTS
    ETCDCTL_API=3 "$ETCDCTL_BIN" --endpoints="$ETCD_TLS_ENDPOINTS" --dial-timeout=2s \
        --cacert "$c/ca.crt" --cert "$c/client.crt" --key "$c/client.key" "$@"
}

etcd_tls_healthy() {
    local c=$ETCD_TLS_CERTS
    curl -fsS --max-time 2 --cacert "$c/ca.crt" --cert "$c/client.crt" --key "$c/client.key" \
        "$ETCD_TLS_ENDPOINTS/health" | grep -q '"health" *: *"true"'
}

# A CA, a server certificate for localhost/127.0.0.1 and a client certificate (CN ferry),
# each valid for 10 days; passwords for root and ferry.
etcd_tls_certs() {
    local c=$ETCD_TLS_CERTS
    [ -f "$c/ferry.password" ] && return 0
    command -v openssl >/dev/null 2>&1 || die "openssl not found (Debian package openssl)"
    mkdir -p "$c"
    chmod 700 "$c"
    (
        cd "$c"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 10 \
            -subj "/CN=ferry test etcd CA" -keyout ca.key -out ca.crt 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
            -keyout server.key -out server.csr 2>/dev/null
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 10 \
            -extfile server.ext -out server.crt 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=ferry" \
            -keyout client.key -out client.csr 2>/dev/null
        printf 'extendedKeyUsage=clientAuth\n' >client.ext
        openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 10 \
            -extfile client.ext -out client.crt 2>/dev/null
        openssl rand -hex 16 >root.password
        openssl rand -hex 16 >ferry.password.new
        mv ferry.password.new ferry.password
    ) || die "could not make the test certificates in $c"
}

etcd_tls_up() {
    etcd_tools
    if etcd_tls_running; then
        wait_until "$TIMEOUT" "etcd on $ETCD_TLS_ENDPOINTS" etcd_tls_healthy ||
            die_log "$ETCD_TLS_LOG" "our TLS etcd runs but is not healthy on $ETCD_TLS_ENDPOINTS"
        return 0
    fi
    [ -n "$ETCDCTL_BIN" ] || die "etcdctl not found (Debian package etcd-client)"
    port_open "$ETCD_TLS_PORT" && die "port $ETCD_TLS_PORT is already in use by something else (set FERRY_ETCD_TLS_PORT)"
    port_open "$ETCD_TLS_PEER_PORT" && die "port $ETCD_TLS_PEER_PORT is already in use by something else (set FERRY_ETCD_TLS_PORT)"
    etcd_tls_certs
    local c=$ETCD_TLS_CERTS
    log "starting etcd with TLS and authentication on $ETCD_TLS_ENDPOINTS"
    etcd_launch ferry-test-tls "$ETCD_TLS_DATA" "$ETCD_TLS_PID" "$ETCD_TLS_LOG" \
        "https://$HOST:$ETCD_TLS_PORT" "http://$HOST:$ETCD_TLS_PEER_PORT" \
        --cert-file "$c/server.crt" --key-file "$c/server.key" \
        --trusted-ca-file "$c/ca.crt" --client-cert-auth
    etcd_wait "$ETCD_TLS_PID" "$ETCD_TLS_LOG" "etcd on $ETCD_TLS_ENDPOINTS" etcd_tls_healthy
    if [ ! -f "$ETCD_TLS_DIR/auth-enabled" ]; then
        {
            etcdctl_tls user add "root:$(cat "$c/root.password")" &&
                etcdctl_tls user add "ferry:$(cat "$c/ferry.password")" &&
                etcdctl_tls role add ferry-rw &&
                etcdctl_tls role grant-permission ferry-rw --prefix=true readwrite /ferry/ &&
                etcdctl_tls user grant-role ferry ferry-rw &&
                etcdctl_tls auth enable
        } >>"$ETCD_TLS_LOG" 2>&1 || die_log "$ETCD_TLS_LOG" "could not enable authentication on the TLS etcd"
        touch "$ETCD_TLS_DIR/auth-enabled"
    fi
    log "etcd on $ETCD_TLS_ENDPOINTS ready (TLS, client certificates, user ferry)"
}

etcd_tls_down() {
    local pid
    pid=$(read_pid "$ETCD_TLS_PID")
    [ -n "$pid" ] || return 0
    stop_pid "$pid" "$ETCD_TLS_DATA" etcd-tls
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

# `ruok` over a plain socket, at most 2 s: a ZooKeeper still starting can accept the
# connection and never answer nor close it (seen in a CI dry run: `up` hung for ever).
zk_ok() {
    [ "$(timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1" && printf ruok >&3 && cat <&3' "$HOST" "$ZK_PORT" 2>/dev/null)" = imok ]
}

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
        <!-- server 1 alone: a source the other pulls from with cluster() (pull_cluster) -->
        <ferry_one>
            <shard><replica><host>$HOST</host><port>$CH1_TCP_PORT</port></replica></shard>
        </ferry_one>
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
    # with their profile's settings, not the query's. ferry_pull: a user with a password
    # whose queries are logged (system.query_log), for the pull tests.
    mkdir -p "$dir/users.d"
    cat >"$dir/users.d/ferry.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default><allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type></default>
        <logged><allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type><log_queries>1</log_queries></logged>
    </profiles>
    <users>
        <ferry_pull>
            <password>$CH_PULL_PASSWORD</password>
            <networks><ip>::1</ip><ip>127.0.0.1</ip></networks>
            <profile>logged</profile>
            <quota>default</quota>
        </ferry_pull>
    </users>
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
            # A ZooKeeper session that failed while the server loaded its Replicated
            # tables is worth another try too (ZooKeeper answered ruok a moment before).
            if grep -q 'Address already in use\|Coordination::Exception\|ZooKeeper' "$dir/clickhouse-server.err.log" 2>/dev/null && [ "$tries" -lt 5 ]; then
                tries=$((tries + 1))
                log "ClickHouse $n: a port was taken or ZooKeeper was not reachable for a moment; starting again ($tries)"
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
# ZooKeeper first: a server whose state dir holds Replicated tables from an earlier run
# (a kept /tmp) looks them up in ZooKeeper while it starts, and 18.16 exits if it can't.
clickhouse_up() {
    local pids=() pid failed=0
    zk_up || die "ZooKeeper did not start (see above)"
    ch_up 1 &
    pids+=($!)
    ch_up 2 &
    pids+=($!)
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    [ "$failed" = 0 ] || die "ClickHouse did not start (see above)"
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
    echo "export FERRY_TEST_CLICKHOUSE_PULL_URL='$CH_PULL_URL'"
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
    ours="$PG_PLAIN_PORT,$MYSQL_PLAIN_PORT,$PG_TLS_PORT,$MYSQL_TLS_PORT,$ETCD_PORT,$ETCD_PEER_PORT"
    ours="$ours,$ETCD_TLS_PORT,$ETCD_TLS_PEER_PORT,$ZK_PORT"
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
    local t0=$SECONDS
    tls_certs
    pg_owner
    my_bins
    # every service in its own subshell, all at once; each dies on its own
    local pids=() names=() failed=() i
    (pg_instance plain; pg_up) &
    pids+=($!) names+=(postgresql)
    (pg_instance tls; pg_up) &
    pids+=($!) names+=(postgresql-tls)
    (my_instance plain; my_up) &
    pids+=($!) names+=(mariadb)
    (my_instance tls; my_up) &
    pids+=($!) names+=(mariadb-tls)
    etcd_up &
    pids+=($!) names+=(etcd)
    etcd_tls_up &
    pids+=($!) names+=(etcd-tls)
    clickhouse_up &
    pids+=($!) names+=(clickhouse)
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || failed+=("${names[$i]}")
    done
    [ "${#failed[@]}" -eq 0 ] || die "could not start: ${failed[*]} (see the messages above)"
    log "all up in $((SECONDS - t0))s (state in $STATE_DIR)"
    log "  FERRY_TEST_PG_URL=$PG_URL"
    log "  FERRY_TEST_MYSQL_URL=$MYSQL_URL"
    log "  FERRY_TEST_PG_TLS_URL=$PG_TLS_URL"
    log "  FERRY_TEST_MYSQL_TLS_URL=$MYSQL_TLS_URL"
    log "  FERRY_TEST_TLS_DIR=$TLS_DIR"
    log "  FERRY_TEST_ETCD_ENDPOINTS=$ETCD_ENDPOINTS"
    log "  FERRY_TEST_ETCD_TLS_ENDPOINTS=$ETCD_TLS_ENDPOINTS (certificates in $ETCD_TLS_CERTS)"
    log "  FERRY_TEST_CLICKHOUSE_URL=$CH1_URL"
    log "  FERRY_TEST_CLICKHOUSE_URL_2=$CH2_URL"
}

cmd_down() {
    take_lock
    if [ -d "$STATE_DIR" ]; then
        etcd_tls_down
        clickhouse_down
        etcd_down
        my_instance tls && my_down
        my_instance plain && my_down
        pg_instance tls && pg_down
        pg_instance plain && pg_down
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
    echo "export FERRY_TEST_PG_TLS_URL='$PG_TLS_URL'"
    echo "export FERRY_TEST_MYSQL_TLS_URL='$MYSQL_TLS_URL'"
    echo "export FERRY_TEST_TLS_DIR='$TLS_DIR'"
    echo "export FERRY_TEST_ETCD_ENDPOINTS='$ETCD_ENDPOINTS'"
    echo "export FERRY_TEST_ETCD_TLS_ENDPOINTS='$ETCD_TLS_ENDPOINTS'"
    echo "export FERRY_TEST_ETCD_TLS_DIR='$ETCD_TLS_CERTS'"
    clickhouse_env
}

cmd_status() {
    local ok=0 pid name
    local instance url
    for instance in plain tls; do
        pg_instance "$instance"
        url=$PG_URL name=postgresql:
        [ "$instance" = tls ] && url=$PG_TLS_URL name=postgresql-tls:
        if pg_running; then
            printf '%-16s running (pid %s) %s\n' "$name" "$(read_pid "$PG_DATA/postmaster.pid")" "$url"
        else
            printf '%-16s stopped\n' "$name"
            ok=1
        fi
    done
    for instance in plain tls; do
        my_instance "$instance"
        url=$MYSQL_URL name=mariadb:
        [ "$instance" = tls ] && url=$MYSQL_TLS_URL name=mariadb-tls:
        if my_running; then
            printf '%-16s running (pid %s) %s\n' "$name" "$(read_pid "$MY_PID")" "$url"
        else
            printf '%-16s stopped\n' "$name"
            ok=1
        fi
    done
    if etcd_running; then
        pid=$(read_pid "$ETCD_PID")
        printf '%-16s running (pid %s) %s\n' etcd: "$pid" "$ETCD_ENDPOINTS"
    else
        printf '%-16s stopped\n' etcd:
        ok=1
    fi
    if etcd_tls_running; then
        printf '%-16s running (pid %s) %s\n' "etcd-tls:" "$(read_pid "$ETCD_TLS_PID")" "$ETCD_TLS_ENDPOINTS"
    else
        printf '%-16s stopped\n' "etcd-tls:"
        ok=1
    fi
    clickhouse_status || ok=1
    printf '%-16s %s\n' "tls dir:" "$TLS_DIR"
    printf '%-16s %s\n' "state dir:" "$STATE_DIR"
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
