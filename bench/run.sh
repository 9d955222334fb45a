#!/usr/bin/env bash
# postmark-relay side by side with Postfix as a null client (relayhost), both
# relaying to the same local sink over loopback.
#
#   bench/run.sh            full run (3 repetitions), writes docs/BENCHMARKS.md
#   bench/run.sh --quick    smoke test: few messages, 1 repetition, checks
#                           counts, writes nothing outside a temp folder
#   bench/run.sh --profile perf|callgrind|syscalls [--only 4k-persist]
#                           one postmark-relay run of the 20-session 4 KiB
#                           scenario (a connection per message, or kept with
#                           --only 4k-persist) under `perf record -e cpu-clock`
#                           (20,000 messages, flat profile per thread; needs
#                           linux-perf) or valgrind's callgrind (1,000
#                           messages, inclusive costs), or counts its system
#                           calls (`perf stat -e 'syscalls:sys_enter_*'`,
#                           20,000 messages); prints the hot spots
#   options: --reps N  --no-doc  --keep (keep the temp folder)
#            --only 4k|4k-persist|100k|4k-wan10|kill9|idle|backlog|pg-1|pg-2|floor
#                   (one scenario, no doc; 4k is a connection per message,
#                   4k-persist 20 connections kept for all their messages)
#
# pg-1 and pg-2 run postmark-relay on the shared queue (queue.backend =
# "postgres"): one and two replicas on one local PostgreSQL (Debian's
# package, started here in the work folder as the postgres user), the
# 20 sessions split between the replicas.
#   env:     RELAY_BIN (default target/release/postmark-relay; built if missing)
#            BENCH_RELAY_REV (what RELAY_BIN was built from, for the doc)
#            BENCH_BACKLOG (queued messages for the start-up test; 100000)
#            BENCH_POSTFIX_LOG=1 (Postfix logs to a file in the work folder)
#            BENCH_RELAYS (default "postmark-relay postfix": which to run)
#            BENCH_N_WAN (messages in 4k-wan10 and kill9; 2000)
#            BENCH_PG_OPTIONS (extra postgres -c options, e.g. "-c log_statement=all")
#            BENCH_PERF_ARGS (extra `perf record` options for --profile perf, e.g. "-g")
#
# Needs root (Postfix's own instance runs as root with mail_owner postfix).
# Installs postfix, libsasl2-modules, sqlite3, iproute2 (ss) and postgresql from Debian
# if missing, without letting Postfix's system instance start or take port 25.
# Everything listens on 127.0.0.1 high ports picked free at start.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
QUICK=0 REPS=3 WRITE_DOC=1 KEEP=0 PROFILE='' ONLY=
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 REPS=1 WRITE_DOC=0 ;;
        --reps) REPS=$2; shift ;;
        --no-doc) WRITE_DOC=0 ;;
        --keep) KEEP=1 ;;
        --only) ONLY=$2 WRITE_DOC=0; shift ;;
        --profile) PROFILE=$2 WRITE_DOC=0; shift ;;
        *) echo "usage: bench/run.sh [--quick] [--reps N] [--no-doc] [--keep] [--only SCENARIO] [--profile perf|callgrind|syscalls]" >&2; exit 64 ;;
    esac
    shift
done

SESSIONS=20 CONNECTIONS=20 TOKEN=bench-server-token
if [ $QUICK = 1 ]; then
    N_SMALL=200 N_BIG=50 N_WAN=100 N_PERSIST=200 N_BACKLOG=0
else
    N_SMALL=5000 N_BIG=1000 N_WAN=${BENCH_N_WAN:-2000} N_PERSIST=20000 N_BACKLOG=${BENCH_BACKLOG:-100000}
fi
WAN_DELAY_MS=10

say() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf '\n[bench] FAILED: %s\n\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }
us_per_msg() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.0f", (b - a) * 1e6 / n }'; } # CPU_S0 CPU_S1 N

# ---------------------------------------------------------------- packages
ensure_packages() {
    local missing=()
    command -v smtp-source >/dev/null && command -v postconf >/dev/null || missing+=(postfix)
    ls /usr/lib/*/sasl2/libplain.so* >/dev/null 2>&1 || missing+=(libsasl2-modules)
    command -v sqlite3 >/dev/null || missing+=(sqlite3)
    command -v ss >/dev/null || missing+=(iproute2)
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
    [ ${#missing[@]} = 0 ] && return
    say "installing ${missing[*]} from Debian"
    [ "$(id -u)" = 0 ] || die "installing packages needs root"
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        # Keeps the package's own Postfix from starting (and taking port 25).
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
    return 0
}

# ---------------------------------------------------------------- cleanup
WORK=$(mktemp -d /var/tmp/pm-bench.XXXXXX)
chmod 755 "$WORK" # Postfix's daemons run as mail_owner and must reach their queue
PIDS=() POSTFIX_DIRS=() PG_BIN=''
cleanup() {
    local pid dir
    for dir in "${POSTFIX_DIRS[@]}"; do
        postfix -c "$dir/etc" stop >/dev/null 2>&1 || true
    done
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    [ -z "$PG_BIN" ] || runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1 || true
    if [ $KEEP = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- tools
ensure_packages
[ "$(id -u)" = 0 ] || die "run as root (Postfix's private instance needs it)"
RELAY_BIN=${RELAY_BIN:-$ROOT/target/release/postmark-relay}
if [ ! -x "$RELAY_BIN" ]; then
    say "building postmark-relay (release)"
    cargo build --release -p postmark-relay --manifest-path "$ROOT/Cargo.toml"
fi
# A copy, so a rebuild during the run cannot swap the binary between runs.
cp "$RELAY_BIN" "$WORK/postmark-relay"
RELAY_BIN=$WORK/postmark-relay
say "building bench tools (bench/sink)"
t=$(now_ms)
cargo build --release --quiet --manifest-path "$ROOT/bench/sink/Cargo.toml"
SINK_BUILD_S=$(awk -v a="$t" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
TOOLS=$ROOT/bench/sink/target/release

wait_listen() { # PORT [PID]
    local deadline=$(($(date +%s) + 20))
    until ss -Hltn "sport = :$1" | grep -q .; do
        [ -z "${2:-}" ] || kill -0 "$2" 2>/dev/null || die "the server for port $1 exited (logs in $WORK)"
        [ "$(date +%s)" -lt "$deadline" ] || die "nothing listens on port $1"
        sleep 0.05
    done
}

# ---------------------------------------------------------------- sink
SINK_PID='' SINK_PORT='' CTL_PORT=''
sink_start() { # DELAY_MS
    local ports
    ports=$("$TOOLS/bench-proc" ports 2) # waits for it to exit and free them
    read -r SINK_PORT CTL_PORT <<<"$ports"
    "$TOOLS/bench-sink" --listen "127.0.0.1:$SINK_PORT" --control "127.0.0.1:$CTL_PORT" \
        --delay-ms "$1" 2>>"$WORK/sink.log" &
    SINK_PID=$!
    PIDS+=("$SINK_PID")
    wait_listen "$CTL_PORT" "$SINK_PID"
}
sink_stop() { kill "$SINK_PID" 2>/dev/null; wait "$SINK_PID" 2>/dev/null || true; }
# total unique no_message_id auths first_ms last_ms
sink_stat() {
    local line
    exec 3<>"/dev/tcp/127.0.0.1/$CTL_PORT"
    read -r line <&3
    exec 3<&-
    echo "$line"
}
# Waits until the sink holds EXPECT messages, then checks none was lost or
# duplicated. Prints the sink's stat line. Gives up after TIMEOUT_S, or when
# nothing arrived for 20 s.
sink_expect() { # EXPECT TIMEOUT_S LABEL
    local deadline=$(($(date +%s) + $2)) total unique rest seen=-1 moved
    moved=$(date +%s)
    while :; do
        read -r total unique rest < <(sink_stat)
        [ "$total" -ge "$1" ] && break
        [ "$total" != "$seen" ] && seen=$total moved=$(date +%s)
        [ $(($(date +%s) - moved)) -lt 20 ] || die "$3: the sink got $total of $1 messages and nothing more for 20 s (lost or stuck)"
        [ "$(date +%s)" -lt "$deadline" ] || die "$3: the sink got $total of $1 messages within $2 s (lost or stuck)"
        sleep 0.05
    done
    sleep 0.5 # anything extra (a duplicate) would arrive now
    read -r total unique rest < <(sink_stat)
    [ "$total" = "$1" ] || die "$3: the sink got $total messages, expected exactly $1 (duplicates)"
    [ "$unique" = "$1" ] || die "$3: only $unique distinct Message-IDs among $total messages (duplicates)"
    echo "$total $unique $rest"
}

# ---------------------------------------------------------------- relays
RELAY_PID='' RELAY_PORT='' PF_DIR='' RELAY_WRAP=() PERF_PID=''
start_pmrelay() { # QUEUE_DIR [SHARED_QUEUE_URL]
    RELAY_PORT=$("$TOOLS/bench-proc" ports 1)
    local dir=$1 queue
    mkdir -p "$dir"
    queue="path = \"$dir/queue\""
    [ -z "${2:-}" ] || queue="backend = \"postgres\"
url = \"$2\""
    cat >"$dir/relay.toml" <<EOF
[server]
listen = ["127.0.0.1:$RELAY_PORT"]
[queue]
$queue
[upstreams.transactional]
host = "127.0.0.1"
port = $SINK_PORT
tls = "none"
connections = $CONNECTIONS
[admin]
listen = ""
[log]
level = "warn"
EOF
    POSTMARK_SERVER_TOKEN=$TOKEN "${RELAY_WRAP[@]}" "$RELAY_BIN" serve -c "$dir/relay.toml" 2>>"$dir/relay.log" &
    RELAY_PID=$!
    PIDS+=("$RELAY_PID")
    wait_listen "$RELAY_PORT" "$RELAY_PID"
}
stop_pmrelay() { kill "$RELAY_PID" 2>/dev/null; wait "$RELAY_PID" 2>/dev/null || true; }

start_postfix() { # DIR
    RELAY_PORT=$("$TOOLS/bench-proc" ports 1)
    PF_DIR=$1
    local etc=$PF_DIR/etc
    mkdir -p "$etc" "$PF_DIR/spool" "$PF_DIR/data"
    chown postfix "$PF_DIR/data"
    # A relay-only null client; every setting not named keeps Postfix's default.
    cat >"$etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF_DIR/spool
data_directory = $PF_DIR/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.localdomain
mydestination =
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:$SINK_PORT
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = texthash:$etc/sasl_passwd
smtp_sasl_security_options = noanonymous
smtp_tls_security_level = none
smtp_connection_cache_on_demand = yes
smtp_connection_cache_destinations = [127.0.0.1]:$SINK_PORT
default_destination_concurrency_limit = $CONNECTIONS
EOF
    # Without a syslog daemon Postfix's log goes nowhere (as cheap as it gets);
    # BENCH_POSTFIX_LOG=1 writes it to a file (costs Postfix a postlogd).
    [ "${BENCH_POSTFIX_LOG:-0}" = 1 ] && echo "maillog_file = $PF_DIR/maillog" >>"$etc/main.cf"
    echo "[127.0.0.1]:$SINK_PORT $TOKEN:$TOKEN" >"$etc/sasl_passwd"
    # Debian's services, none chrooted (the private queue has no chroot tree),
    # smtpd on a loopback high port instead of 25.
    cat >"$etc/master.cf" <<EOF
127.0.0.1:$RELAY_PORT inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
    postfix -c "$etc" check >>"$PF_DIR/postfix.log" 2>&1 || die "postfix check failed: $(tail -3 "$PF_DIR/postfix.log")"
    POSTFIX_DIRS+=("$PF_DIR")
    postfix -c "$etc" start >>"$PF_DIR/postfix.log" 2>&1 || die "postfix start failed (BENCH_POSTFIX_LOG=1 --keep shows why): $(tail -3 "$PF_DIR/postfix.log")"
    wait_listen "$RELAY_PORT"
    local i
    for i in $(seq 100); do
        [ -s "$PF_DIR/spool/pid/master.pid" ] && break
        sleep 0.05
    done
    RELAY_PID=$(tr -d ' \n' <"$PF_DIR/spool/pid/master.pid")
}
stop_postfix() {
    postfix -c "$PF_DIR/etc" stop >>"$PF_DIR/postfix.log" 2>&1 || true
    local i
    for i in $(seq 100); do kill -0 "$RELAY_PID" 2>/dev/null || break; sleep 0.1; done
}

# ---------------------------------------------------------------- one run
RESULTS=$WORK/results.tsv
: >"$RESULTS"
# A run's figures go to REC and join RESULTS only if the whole run passed.
REC=$RESULTS
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$REC"; }

# relay scenario rep N LENGTH DELAY_MS LATENCY(0|1)
run_one() {
    local relay=$1 scen=$2 rep=$3 n=$4 len=$5 delay=$6 latency=$7
    local dir=$WORK/$relay-$scen-$rep label="$relay $scen #$rep"
    REC=$dir.rec
    : >"$REC"
    sink_start "$delay"
    if [ "$relay" = postfix ]; then start_postfix "$dir"; else start_pmrelay "$dir"; fi
    sleep 0.3
    local cpu0 cpu1 sink0 sink1 rest t0 t1 stat total unique noid auths first last
    read -r cpu0 rest < <("$TOOLS/bench-proc" snap "$RELAY_PID")
    read -r sink0 rest < <("$TOOLS/bench-proc" snap "$SINK_PID")
    "$TOOLS/bench-proc" peak "$RELAY_PID" "$dir.peak" 100 &
    local sampler=$!
    PIDS+=("$sampler")
    if [ "$PROFILE" = perf ]; then
        perf record -e cpu-clock -F 1999 ${BENCH_PERF_ARGS:-} -p "$RELAY_PID" -o "$WORK/perf.data" 2>>"$WORK/perf.log" &
        PERF_PID=$!
        sleep 0.5
    elif [ "$PROFILE" = syscalls ]; then
        perf stat -e 'syscalls:sys_enter_*' -p "$RELAY_PID" -o "$WORK/syscalls.txt" 2>>"$WORK/perf.log" &
        PERF_PID=$!
        sleep 0.5
    fi
    # -d: each session keeps its connection for all its messages.
    local persist=()
    [ "$scen" = 4k-persist ] && persist=(-d)
    t0=$(now_ms)
    smtp-source "${persist[@]}" -s $SESSIONS -m "$n" -l "$len" -f a@example.com -t b@example.net \
        "127.0.0.1:$RELAY_PORT" 2>"$dir.source.err" || die "$label: smtp-source failed: $(head -3 "$dir.source.err")"
    t1=$(now_ms)
    stat=$(sink_expect "$n" $((60 + n / 20)) "$label")
    read -r total unique noid auths first last <<<"$stat"
    read -r cpu1 rest < <("$TOOLS/bench-proc" snap "$RELAY_PID")
    read -r sink1 rest < <("$TOOLS/bench-proc" snap "$SINK_PID")
    if [ -n "$PERF_PID" ]; then kill -INT "$PERF_PID"; wait "$PERF_PID" || true; PERF_PID=''; fi
    local ingest e2e cpu_k
    ingest=$(awk -v n="$n" -v ms=$((t1 - t0)) 'BEGIN { printf "%.0f", n * 1000 / ms }')
    e2e=$(awk -v n="$n" -v ms=$((last - t0)) 'BEGIN { printf "%.0f", n * 1000 / ms }')
    cpu_k=$(awk -v a="$cpu0" -v b="$cpu1" -v n="$n" 'BEGIN { printf "%.3f", (b - a) * 1000 / n }')
    record "$relay" "$scen" ingest_msgs_s "$ingest"
    record "$relay" "$scen" e2e_msgs_s "$e2e"
    record "$relay" "$scen" cpu_s_per_1000 "$cpu_k"
    record "$relay" "$scen" upstream_cpu_us_per_msg "$(us_per_msg "$sink0" "$sink1" "$n")"
    record "$relay" "$scen" upstream_logins "$auths"
    local lat=''
    if [ "$latency" = 1 ]; then
        local out msgs secs rate p50 p90 p99 max
        out=$("$TOOLS/bench-load" "127.0.0.1:$RELAY_PORT" $SESSIONS "$n" "$len") \
            || die "$label: latency client failed"
        read -r msgs secs rate p50 p90 p99 max <<<"$out"
        sink_expect $((2 * n)) $((60 + n / 20)) "$label (latency pass)" >/dev/null
        record "$relay" "$scen" lat_p50_ms "$p50"
        record "$relay" "$scen" lat_p99_ms "$p99"
        record "$relay" "$scen" load_ingest_msgs_s "$rate"
        lat=" | latency client: p50 ${p50} ms p99 ${p99} ms (${rate} msg/s)"
    fi
    kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
    local peak=0 peak_pss=0
    [ -s "$dir.peak" ] && read -r peak peak_pss <"$dir.peak"
    record "$relay" "$scen" peak_rss_mb "$(awk -v k="$peak" 'BEGIN { printf "%.1f", k / 1024 }')"
    record "$relay" "$scen" peak_pss_mb "$(awk -v k="$peak_pss" 'BEGIN { printf "%.1f", k / 1024 }')"
    if [ "$relay" = postfix ]; then stop_postfix; else stop_pmrelay; fi
    sink_stop
    cat "$REC" >>"$RESULTS"
    say "$label: $n msgs, ingest $ingest msg/s, end-to-end $e2e msg/s, cpu $cpu_k s/1000, peak RSS $((peak / 1024)) MB (PSS $((peak_pss / 1024)) MB), $auths upstream logins$lat"
}

# Runs run_one in a subshell that cleans up after itself. postmark-relay's
# queue ids once were 20 random bits per millisecond and at thousands of
# messages a second two sessions could draw the same id (the store refused
# the second with `452 4.3.1`, on which smtp-source gives up); they now use a
# per-process counter, so a repeat here means that regressed. That run is repeated (at most twice) and counted
# in id_collisions; any other failure ends the benchmark.
COLLISIONS=0
attempt() { # same arguments as run_one
    local try status dir=$WORK/$1-$2-$3
    for try in 1 2 3; do
        set +e
        (
            set -e
            trap 'st=$?
                  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
                  for d in "${POSTFIX_DIRS[@]}"; do postfix -c "$d/etc" stop >/dev/null 2>&1 || true; done
                  exit $st' EXIT
            run_one "$@"
        )
        status=$?
        set -e
        [ $status = 0 ] && return 0
        [ $status = 130 ] && exit 130
        grep -qs 'UNIQUE constraint failed: messages.id' "$dir/relay.log" || exit 1
        COLLISIONS=$((COLLISIONS + 1))
        say "$1 $2 #$3: postmark-relay answered 452 to a queue-id collision; running it again"
        mv "$dir" "$dir.collision$try"
    done
    die "$1 $2 #$3: three attempts failed"
}

# ---------------------------------------------------------------- shared queue
# One PostgreSQL for the pg-* scenarios, started once (as the postgres
# user: it refuses root) with its defaults (fsync and synchronous_commit
# on), a role and database for the relays like production's.
PG_URL='' PG_PORT=''
pg_start() {
    [ -n "$PG_URL" ] && return
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    PG_PORT=$("$TOOLS/bench-proc" ports 1)
    mkdir -p "$WORK/pg"
    chown postgres "$WORK/pg"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$WORK/pg/data" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 -E UTF8 --no-instructions >"$WORK/pg/initdb.log" 2>&1 \
        || die "initdb failed: $(tail -3 "$WORK/pg/initdb.log")"
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/server.log" -w -t 60 \
        -o "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c max_connections=200 ${BENCH_PG_OPTIONS:-}" start >/dev/null \
        || die "PostgreSQL did not start: $(tail -3 "$WORK/pg/server.log")"
    pg_sql postgres "CREATE ROLE relay LOGIN PASSWORD 'bench'" >/dev/null
    pg_sql postgres "CREATE DATABASE relay OWNER relay" >/dev/null
    PG_URL="postgres://relay:bench@127.0.0.1:$PG_PORT/relay"
    say "PostgreSQL $("$PG_BIN/postgres" --version | awk '{ print $3 }') on port $PG_PORT"
}
pg_sql() { # DB SQL: tuples only
    runuser -u postgres -- "$PG_BIN/psql" -h "$WORK/pg" -p "$PG_PORT" -U postgres -d "$1" -qAt -v ON_ERROR_STOP=1 -c "$2"
}
pg_pid() { head -1 "$WORK/pg/data/postmaster.pid"; }
pg_commits() { # committed transactions in the relay's database so far
    sleep 1.2 # backends report their counts to the statistics at most every second
    pg_sql relay "SELECT xact_commit FROM pg_stat_database WHERE datname = 'relay'"
}

# pg-R: R replicas of postmark-relay on the shared queue, each receiving
# N/R messages over SESSIONS/R sessions at the same time.
run_shared() { # SCENARIO REP N REPLICAS
    local scen=$1 rep=$2 n=$3 replicas=$4 label="postmark-relay $1 #$2"
    local dir=$WORK/postmark-relay-$scen-$rep
    REC=$dir.rec
    : >"$REC"
    pg_start
    pg_sql relay "DROP SCHEMA IF EXISTS postmark_relay CASCADE" >/dev/null 2>&1
    sink_start 0
    local r pids=() ports=()
    for r in $(seq "$replicas"); do
        start_pmrelay "$dir/replica-$r" "$PG_URL"
        pids+=("$RELAY_PID") ports+=("$RELAY_PORT")
    done
    sleep 0.5
    local cpu0=0 cpu1=0 pg0 pg1 c0 c1 cpu rest t0 t1 stat total unique noid auths first last
    for r in "${pids[@]}"; do
        read -r cpu rest < <("$TOOLS/bench-proc" snap "$r")
        cpu0=$(awk -v a="$cpu0" -v b="$cpu" 'BEGIN { print a + b }')
    done
    c0=$(pg_commits)
    read -r pg0 rest < <("$TOOLS/bench-proc" snap "$(pg_pid)")
    t0=$(now_ms)
    local sources=()
    for r in $(seq 0 $((replicas - 1))); do
        smtp-source -s $((SESSIONS / replicas)) -m $((n / replicas)) -l 4096 -f a@example.com -t b@example.net \
            "127.0.0.1:${ports[$r]}" 2>"$dir.source-$r.err" &
        sources+=($!)
    done
    for r in "${sources[@]}"; do wait "$r" || die "$label: smtp-source failed: $(cat "$dir".source-*.err | head -3)"; done
    t1=$(now_ms)
    stat=$(sink_expect "$n" $((60 + n / 20)) "$label")
    read -r total unique noid auths first last <<<"$stat"
    read -r pg1 rest < <("$TOOLS/bench-proc" snap "$(pg_pid)")
    for r in "${pids[@]}"; do
        read -r cpu rest < <("$TOOLS/bench-proc" snap "$r")
        cpu1=$(awk -v a="$cpu1" -v b="$cpu" 'BEGIN { print a + b }')
    done
    c1=$(pg_commits)
    local ingest e2e relay_us pg_us commits
    ingest=$(awk -v n="$n" -v ms=$((t1 - t0)) 'BEGIN { printf "%.0f", n * 1000 / ms }')
    e2e=$(awk -v n="$n" -v ms=$((last - t0)) 'BEGIN { printf "%.0f", n * 1000 / ms }')
    relay_us=$(us_per_msg "$cpu0" "$cpu1" "$n")
    pg_us=$(us_per_msg "$pg0" "$pg1" "$n")
    commits=$(awk -v a="$c0" -v b="$c1" -v n="$n" 'BEGIN { printf "%.2f", (b - a) / n }')
    record postmark-relay "$scen" ingest_msgs_s "$ingest"
    record postmark-relay "$scen" e2e_msgs_s "$e2e"
    record postmark-relay "$scen" relay_cpu_us_per_msg "$relay_us"
    record postmark-relay "$scen" pg_cpu_us_per_msg "$pg_us"
    record postmark-relay "$scen" commits_per_msg "$commits"
    for r in "${pids[@]}"; do kill "$r" 2>/dev/null; wait "$r" 2>/dev/null || true; done
    sink_stop
    cat "$REC" >>"$RESULTS"
    say "$label: $n msgs over $replicas replica(s), ingest $ingest msg/s, end-to-end $e2e msg/s, relay cpu $relay_us µs/msg, PostgreSQL cpu $pg_us µs/msg, $commits commits/msg"
}

# ---------------------------------------------------------------- floor
# What the network half alone costs on this machine: the same smtp-source
# load sent straight to Postfix's smtp-sink, a small C event loop that
# answers and discards (no relay, no disk, no TLS). The sink's CPU per
# message is what receiving costs a lean program; smtp-source's is what
# sending costs one. A relay does both for every message, and stores it.
floor() { # SCENARIO N
    REC=$RESULTS
    local scen=$1 n=$2 port user=() persist=() cpu0 cpu1 rest times pid
    port=$("$TOOLS/bench-proc" ports 1)
    [ "$(id -u)" = 0 ] && user=(-u nobody) # smtp-sink drops root
    smtp-sink "${user[@]}" "127.0.0.1:$port" 1000 2>>"$WORK/smtp-sink.log" &
    pid=$!
    PIDS+=("$pid")
    wait_listen "$port" "$pid"
    [ "$scen" = 4k-persist ] && persist=(-d)
    read -r cpu0 rest < <("$TOOLS/bench-proc" snap "$pid")
    times=$( { TIMEFORMAT='%U %S'; time smtp-source "${persist[@]}" -s $SESSIONS -m "$n" -l 4096 \
        -f a@example.com -t b@example.net "127.0.0.1:$port" 2>"$WORK/floor.err"; } 2>&1 ) \
        || die "floor $scen: smtp-source failed: $(head -3 "$WORK/floor.err")"
    read -r cpu1 rest < <("$TOOLS/bench-proc" snap "$pid")
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    local sink_us source_us
    sink_us=$(us_per_msg "$cpu0" "$cpu1" "$n")
    source_us=$(us_per_msg 0 "$(echo "$times" | awk '{ print $1 + $2 }')" "$n")
    record floor "$scen" sink_cpu_us_per_msg "$sink_us"
    record floor "$scen" source_cpu_us_per_msg "$source_us"
    say "floor $scen: smtp-sink receiving $sink_us µs/msg, smtp-source sending $source_us µs/msg ($n msgs)"
}

# ---------------------------------------------------------------- extras
idle_rss() {
    REC=$RESULTS
    sink_start 0
    start_pmrelay "$WORK/idle"
    sleep 3
    local rss
    read -r _ rss _ < <("$TOOLS/bench-proc" snap "$RELAY_PID")
    record postmark-relay idle idle_rss_mb "$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')"
    say "postmark-relay idle RSS $((rss / 1024)) MB"
    stop_pmrelay
    sink_stop
}

# Fills a queue with N messages by a direct insert matching
# crates/queue/src/schema.rs (schema version 1), then times start -> first
# message at the sink, and how many arrive in the 5 s after that.
backlog() { # N
    REC=$RESULTS
    local n=$1 dir=$WORK/backlog
    mkdir -p "$dir/queue"
    local body
    body="From: <a@example.com>\r\nTo: <b@example.net>\r\nSubject: backlog\r\nMessage-ID: <%d@bench>\r\n\r\n$(printf 'X%.0s' $(seq 76))\r\n"
    say "filling a queue with $n messages (direct SQLite insert)"
    sqlite3 "$dir/queue/queue.sqlite3" <<EOF >/dev/null
PRAGMA journal_mode = WAL;
CREATE TABLE messages (
    id TEXT PRIMARY KEY, received_at INTEGER NOT NULL, sender TEXT NOT NULL,
    upstream TEXT NOT NULL, stream TEXT, size INTEGER NOT NULL, data BLOB NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER,
    lease_until INTEGER, last_error TEXT);
CREATE INDEX messages_due ON messages (upstream, next_attempt_at);
CREATE TABLE recipients (
    message_id TEXT NOT NULL, idx INTEGER NOT NULL, address TEXT NOT NULL,
    state TEXT NOT NULL, reply TEXT, PRIMARY KEY (message_id, idx)) WITHOUT ROWID;
PRAGMA user_version = 1;
BEGIN;
WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < $n)
INSERT INTO messages (id, received_at, sender, upstream, stream, size, data, state, next_attempt_at)
SELECT printf('%016X', i), $(now_ms) - 60000 + i / 100, 'a@example.com', 'transactional', NULL, 4096,
       CAST(printf(replace('$body', '\r\n', char(13, 10)), i) || replace(hex(zeroblob(1300)), '00', 'X' || char(13, 10)) AS BLOB),
       'queued', $(now_ms) - 60000 + i / 100
FROM k;
INSERT INTO recipients (message_id, idx, address, state) SELECT id, 0, 'b@example.net', 'pending' FROM messages;
COMMIT;
EOF
    sink_start 0
    local t0 first total
    t0=$(now_ms)
    start_pmrelay "$dir"
    local deadline=$(($(date +%s) + 60))
    while :; do
        read -r total _ _ _ first _ < <(sink_stat)
        [ "$total" -gt 0 ] && break
        [ "$(date +%s)" -lt "$deadline" ] || die "backlog: no delivery within 60 s of start"
        sleep 0.02
    done
    sleep 5
    read -r total _ < <(sink_stat)
    local drained
    drained=$(awk -v c="$total" -v ms=$(($(now_ms) - first)) 'BEGIN { printf "%.0f", c * 1000 / ms }')
    record postmark-relay backlog first_delivery_s "$(awk -v ms=$((first - t0)) 'BEGIN { printf "%.2f", ms / 1000 }')"
    record postmark-relay backlog drain_msgs_s "$drained"
    say "backlog of $n: first delivery $((first - t0)) ms after start, then ~$drained msg/s"
    stop_pmrelay
    sink_stop
}

# kill -9 while delivering: N messages accepted, the relay killed with
# deliveries in full flow over the 10 ms link, started again on the same
# queue. Every message must arrive; the duplicates are the messages the
# upstream had taken whose outcome was not recorded yet. Counted two ways:
# at the kill (messages still queued that the sink already holds) and after
# the restart (sink total minus distinct Message-IDs).
kill9() { # REP
    REC=$RESULTS
    local n=$N_WAN dir=$WORK/kill9-$1 total unique rest queued
    sink_start "$WAN_DELAY_MS"
    start_pmrelay "$dir"
    smtp-source -s $SESSIONS -m "$n" -l 4096 -f a@example.com -t b@example.net \
        "127.0.0.1:$RELAY_PORT" 2>"$dir.source.err" || die "kill9: smtp-source failed: $(head -3 "$dir.source.err")"
    # Kill once about a third has gone out: every connection busy.
    local deadline=$(($(date +%s) + 60))
    while read -r total unique rest < <(sink_stat) && [ "$total" -lt $((n / 3)) ]; do
        [ "$(date +%s)" -lt "$deadline" ] || die "kill9: deliveries did not start"
        sleep 0.01
    done
    kill -9 "$RELAY_PID"
    wait "$RELAY_PID" 2>/dev/null || true
    sleep 0.3 # what was on the wire lands (or not) now
    read -r total unique rest < <(sink_stat)
    queued=$(sqlite3 "$dir/queue/queue.sqlite3" "SELECT count(*) FROM messages")
    local unrecorded=$((queued - (n - unique)))
    start_pmrelay "$dir"
    deadline=$(($(date +%s) + 120))
    while read -r total unique rest < <(sink_stat) && [ "$unique" -lt "$n" ]; do
        [ "$(date +%s)" -lt "$deadline" ] || die "kill9: only $unique of $n messages arrived after the restart (lost)"
        sleep 0.05
    done
    sleep 1
    read -r total unique rest < <(sink_stat)
    [ "$unique" = "$n" ] || die "kill9: $unique distinct messages, expected $n"
    record postmark-relay kill9 unrecorded_at_kill "$unrecorded"
    record postmark-relay kill9 duplicates "$((total - unique))"
    say "kill -9 #$1: $n accepted, $unrecorded delivered but not recorded at the kill, $((total - unique)) duplicates after the restart, none lost"
    stop_pmrelay
    sink_stop
}

# ---------------------------------------------------------------- profile
if [ -n "$PROFILE" ]; then
    case "$PROFILE" in
        perf)
            command -v perf >/dev/null || die "perf is missing (apt-get install linux-perf)"
            run_one postmark-relay "${ONLY:-4k}" 1 $((4 * N_SMALL)) 4096 0 0
            perf report -i "$WORK/perf.data" --stdio --sort comm 2>/dev/null | grep -v '^#' | grep . | head -8
            perf report -i "$WORK/perf.data" --stdio --sort dso 2>/dev/null | grep -v '^#' | grep . | head -8
            perf report -i "$WORK/perf.data" --stdio --sort comm,dso,sym 2>/dev/null | grep -v '^#' | grep . | head -45
            ;;
        callgrind)
            command -v valgrind >/dev/null || die "valgrind is missing (apt-get install valgrind)"
            RELAY_WRAP=(valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out")
            run_one postmark-relay "${ONLY:-4k}" 1 $((N_SMALL / 5)) 4096 0 0
            callgrind_annotate --inclusive=yes "$WORK/callgrind.out" 2>/dev/null | head -60
            callgrind_annotate "$WORK/callgrind.out" 2>/dev/null | head -50
            ;;
        syscalls)
            command -v perf >/dev/null || die "perf is missing (apt-get install linux-perf)"
            run_one postmark-relay "${ONLY:-4k}" 1 $((4 * N_SMALL)) 4096 0 0
            awk -v n=$((4 * N_SMALL)) '$2 ~ /^syscalls:sys_enter_/ && $1 + 0 > 0 {
                    gsub(/,/, "", $1); sub(/syscalls:sys_enter_/, "", $2)
                    printf "%10d  %6.2f per message  %s\n", $1, $1 / n, $2 }' "$WORK/syscalls.txt" | sort -rn | head -25
            ;;
        *) die "--profile takes perf, callgrind or syscalls" ;;
    esac
    say "profile data in $WORK (use --keep to keep it)"
    exit 0
fi

# ---------------------------------------------------------------- main
started=$(date +%s)
say "work folder $WORK; sink tools built in ${SINK_BUILD_S}s"
load_note=$(uptime | sed 's/.*load average/load average/')
say "machine $load_note; other rustc now: $(pgrep -c rustc || true)"
want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }
for rep in $(seq "$REPS"); do
    for relay in ${BENCH_RELAYS:-postmark-relay postfix}; do
        want 4k && attempt "$relay" 4k "$rep" "$N_SMALL" 4096 0 1
        want 4k-persist && attempt "$relay" 4k-persist "$rep" "$N_PERSIST" 4096 0 0
        want 100k && attempt "$relay" 100k "$rep" "$N_BIG" 102400 0 1
        want 4k-wan10 && attempt "$relay" 4k-wan10 "$rep" "$N_WAN" 4096 "$WAN_DELAY_MS" 0
    done
done
if want floor; then
    for rep in $(seq "$REPS"); do
        floor 4k-persist "$N_PERSIST"
        floor 4k "$N_SMALL"
    done
fi
for rep in $(seq "$REPS"); do
    want pg-1 && run_shared pg-1 "$rep" "$N_SMALL" 1
    want pg-2 && run_shared pg-2 "$rep" "$N_SMALL" 2
done
if want kill9; then for rep in $(seq "$REPS"); do kill9 "$rep"; done; fi
want idle && idle_rss
if want backlog && [ "$N_BACKLOG" -gt 0 ]; then backlog "$N_BACKLOG"; fi
ELAPSED=$(($(date +%s) - started))
say "all runs passed the count checks (${ELAPSED}s; runs repeated after a queue-id collision: $COLLISIONS)"

# Medians per (relay, scenario, metric).
median() { # relay scen metric
    awk -F'\t' -v r="$1" -v s="$2" -v m="$3" '$1 == r && $2 == s && $3 == m { print $4 }' "$RESULTS" \
        | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0 || a == "-") print "-"; else printf "%.2f", a / b }'; }

table() {
    echo "| scenario | metric | postmark-relay | Postfix | relay ÷ Postfix |"
    echo "|---|---|---:|---:|---:|"
    local scen metric a b
    for scen in 4k 4k-persist 100k 4k-wan10; do
        for metric in ingest_msgs_s e2e_msgs_s lat_p50_ms lat_p99_ms load_ingest_msgs_s peak_rss_mb peak_pss_mb cpu_s_per_1000 upstream_cpu_us_per_msg upstream_logins; do
            a=$(median postmark-relay $scen $metric)
            b=$(median postfix $scen $metric)
            [ "$a" = - ] && [ "$b" = - ] && continue
            echo "| $scen | $metric | $a | $b | $(ratio "$a" "$b") |"
        done
    done
    for scen in 4k-persist 4k; do
        for metric in sink_cpu_us_per_msg source_cpu_us_per_msg; do
            a=$(median floor $scen $metric)
            [ "$a" = - ] || echo "| $scen floor (smtp-source → smtp-sink, no relay) | $metric | $a | | |"
        done
    done
    for scen in pg-1 pg-2; do
        for metric in ingest_msgs_s e2e_msgs_s relay_cpu_us_per_msg pg_cpu_us_per_msg commits_per_msg; do
            a=$(median postmark-relay $scen $metric)
            [ "$a" = - ] || echo "| $scen (shared queue) | $metric | $a | | |"
        done
    done
    for metric in unrecorded_at_kill duplicates; do
        a=$(median postmark-relay kill9 $metric)
        [ "$a" = - ] || echo "| kill -9 at 10 ms | $metric | $a | | |"
    done
    echo "| idle | idle_rss_mb | $(median postmark-relay idle idle_rss_mb) | | |"
    echo "| backlog $N_BACKLOG | first_delivery_s | $(median postmark-relay backlog first_delivery_s) | | |"
    echo "| backlog $N_BACKLOG | drain_msgs_s | $(median postmark-relay backlog drain_msgs_s) | | |"
}
TABLE=$(table)
echo
echo "$TABLE"
echo

# met / not met; "not measured" when a figure is missing ("-": awk cannot parse it)
verdict() {
    local rc=0
    awk "BEGIN { exit !($1) }" 2>/dev/null || rc=$?
    case $rc in 0) echo "**met**" ;; 1) echo "**not met**" ;; *) echo "not measured" ;; esac
}
targets() {
    local ing_r ing_p e2e_r e2e_p wan_r wan_p p99 idle rss first ideal
    ing_r=$(median postmark-relay 4k ingest_msgs_s); ing_p=$(median postfix 4k ingest_msgs_s)
    e2e_r=$(median postmark-relay 4k e2e_msgs_s); e2e_p=$(median postfix 4k e2e_msgs_s)
    wan_r=$(median postmark-relay 4k-wan10 e2e_msgs_s); wan_p=$(median postfix 4k-wan10 e2e_msgs_s)
    p99=$(median postmark-relay 4k lat_p99_ms)
    idle=$(median postmark-relay idle idle_rss_mb)
    rss=$(median postmark-relay 4k peak_rss_mb)
    first=$(median postmark-relay backlog first_delivery_s)
    # Pipelined back to back, a message costs one round trip on its
    # connection: the limit is connections ÷ RTT, RTT = 2 × one-way delay.
    ideal=$(awk -v c=$CONNECTIONS -v d=$WAN_DELAY_MS 'BEGIN { printf "%.0f", c / (2 * d / 1000) }')
    echo "| target | measured | verdict |"
    echo "|---|---|---|"
    echo "| ingest ≥ 3× Postfix (20 sessions, 4 KiB) | $ing_r vs $ing_p msg/s = $(ratio "$ing_r" "$ing_p")× | $(verdict "$ing_r >= 3 * $ing_p") |"
    echo "| end-to-end ≥ 3× Postfix at 0 ms | $e2e_r vs $e2e_p msg/s = $(ratio "$e2e_r" "$e2e_p")× | $(verdict "$e2e_r >= 3 * $e2e_p") |"
    echo "| end-to-end at ${WAN_DELAY_MS} ms one-way ≥ 2× Postfix | $wan_r vs $wan_p msg/s = $(ratio "$wan_r" "$wan_p")× | $(verdict "$wan_r >= 2 * $wan_p") |"
    echo "| … and ≥ 90 % of connections ÷ RTT = $ideal msg/s | $wan_r msg/s = $(awk -v a="$wan_r" -v b="$ideal" 'BEGIN { printf "%.0f", 100 * a / b }') % | $(verdict "$wan_r >= 0.9 * $ideal") |"
    local cpu_conn cpu_persist
    cpu_conn=$(median postmark-relay 4k cpu_s_per_1000 | awk '{ if ($1 == "-") print "-"; else printf "%.0f", $1 * 1000 }')
    cpu_persist=$(median postmark-relay 4k-persist cpu_s_per_1000 | awk '{ if ($1 == "-") print "-"; else printf "%.0f", $1 * 1000 }')
    # The floor: what receiving alone (smtp-sink) and sending alone
    # (smtp-source) cost lean C programs on the same load and machine.
    # Receiving as smtp-sink does it, plus the upstream side of the same
    # run as the sink saw it (the relay pipelines over kept connections:
    # one side of that conversation).
    floor_of() { echo "floor: receiving alone $(median floor "$1" sink_cpu_us_per_msg) + the upstream side alone $(median postmark-relay "$1" upstream_cpu_us_per_msg) µs"; }
    [ "$cpu_persist" = - ] || echo "| CPU ≤ 100 µs per message, persistent sessions (4k-persist) | $cpu_persist µs ($(floor_of 4k-persist)) | $(verdict "$cpu_persist <= 100") |"
    [ "$cpu_conn" = - ] || echo "| CPU ≤ 200 µs per message, a connection per message (4k) | $cpu_conn µs ($(floor_of 4k)) | $(verdict "$cpu_conn <= 200") |"
    echo "| ingest p99 ≤ 20 ms | $p99 ms | $(verdict "$p99 <= 20") |"
    echo "| idle RSS ≤ 15 MB | $idle MB | $(verdict "$idle <= 15") |"
    echo "| RSS during the 20-session run ≤ 60 MB | $rss MB (4 KiB); $(median postmark-relay 100k peak_rss_mb) MB (100 KiB) | $(verdict "$rss <= 60") |"
    local pg2
    pg2=$(median postmark-relay pg-2 e2e_msgs_s)
    if [ "$pg2" = - ]; then
        echo "| shared queue, 2 replicas: end-to-end ≥ 2,000 msg/s | not measured | – |"
    else
        echo "| shared queue, 2 replicas: end-to-end ≥ 2,000 msg/s | $pg2 msg/s | $(verdict "$pg2 >= 2000") |"
    fi
    if [ "$first" = - ]; then
        echo "| 100,000 queued → first delivery ≤ 2 s | not measured (--quick) | – |"
    else
        echo "| 100,000 queued → first delivery ≤ 2 s | $first s | $(verdict "$first <= 2") |"
    fi
}
TARGETS=$(targets)
echo "$TARGETS"

if [ $WRITE_DOC = 1 ]; then
    doc=$ROOT/docs/BENCHMARKS.md
    mkdir -p "$ROOT/docs"
    relay_version=$("$RELAY_BIN" --version 2>/dev/null || echo "postmark-relay (unknown version)")
    # BENCH_RELAY_REV names the source of a RELAY_BIN built elsewhere.
    git_rev=${BENCH_RELAY_REV:-$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo "?")}
    {
        cat <<EOF
# Benchmarks: postmark-relay beside Postfix

Generated by \`bench/run.sh\` (reps: $REPS, medians shown) on $(date -u +%Y-%m-%d).
Re-run with:

\`\`\`sh
cargo build --release -p postmark-relay && bench/run.sh
\`\`\`

## Machine

| | |
|---|---|
| CPUs | $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') |
| memory | $(free -h | awk '/^Mem:/ { print $2 }') |
| kernel | $(uname -sr) |
| OS | $(. /etc/os-release && echo "$PRETTY_NAME") |
| Postfix | $(postconf -d -h mail_version) |
| postmark-relay | $relay_version (git $git_rev, release build) |
| load at start | $load_note |
| disk | queues of both relays on the same filesystem ($(df --output=source,fstype "$WORK" | tail -1 | tr -s ' ')) |

## Results

$TABLE

- **ingest_msgs_s**: \`smtp-source -s $SESSIONS -m N -l LEN -f a@example.com -t b@example.net\`
  (one message per connection, as smtp-source does without \`-d\`), N divided by
  the time until smtp-source returned (its last \`250\`). N = $N_SMALL (4k),
  $N_BIG (100k), $N_WAN (4k-wan10). **4k-persist**: the same with
  \`smtp-source -d\` (each of the 20 sessions keeps its connection for all
  its messages), N = $N_PERSIST; every other scenario opens a connection
  per message, as PHP's \`mail()\`, cron and most legacy apps do.
- **e2e_msgs_s**: N divided by the time from smtp-source's start to the sink
  taking the last message. Every run checks the sink took exactly N messages
  with N distinct Message-IDs, and fails otherwise.
- **lat_p50_ms / lat_p99_ms**: a second pass with \`bench-load\` (bench/sink),
  the same load shape (20 concurrent sessions, one message per connection,
  same size and count, while the relay keeps delivering): time from handing the
  body and its final \`.\` to the kernel in one write (TCP_NODELAY) to reading
  the \`250\`. **load_ingest_msgs_s** is that pass's throughput.
- **peak_rss_mb**: the largest sum of VmRSS over the relay's process tree,
  sampled every 100 ms through both passes (\`bench-proc peak\`). For Postfix
  that is master and all its children (smtpd, cleanup, trivial-rewrite, qmgr,
  smtp, anvil, scache, pickup, ...); a sum of RSS counts shared library pages
  once per process, so it overstates Postfix's memory. **peak_pss_mb** is the
  same with PSS (/proc/PID/smaps_rollup: shared pages split among the
  processes sharing them), the fairer figure for a many-process server.
- **cpu_s_per_1000**: utime+stime over the smtp-source pass (start to last
  message at the sink) per 1,000 messages: the relay's process, or for Postfix
  every live process of the instance plus master's cutime+cstime (children that
  exited and were reaped during the run).
- **upstream_cpu_us_per_msg**: the sink's CPU per message over the same window:
  what one side of the relay's upstream conversation costs a lean program
  (the relay pipelines over kept connections; Postfix opens more).
- **upstream_logins**: AUTHs the sink saw, i.e. upstream connections opened.
- **4k-wan10**: the sink delays every chunk by $WAN_DELAY_MS ms each way (RTT
  $((2 * WAN_DELAY_MS)) ms), both relays use $CONNECTIONS upstream connections.
- **pg-1 / pg-2 (shared queue)**: postmark-relay with \`queue.backend =
  "postgres"\`, one or two replicas on one local PostgreSQL (defaults:
  \`fsync\` and \`synchronous_commit\` on), N = $N_SMALL messages of 4 KiB at
  0 ms, the 20 sessions split evenly between the replicas (one smtp-source per
  replica, run together). **relay_cpu_us_per_msg**: CPU of all replicas per
  message; **pg_cpu_us_per_msg**: CPU of the PostgreSQL server (postmaster and
  every backend) per message; **commits_per_msg**: committed transactions in
  the relay's database (\`pg_stat_database.xact_commit\`) per message. Relays,
  PostgreSQL, smtp-source and the sink share the same 2 cores.
- **floor (no relay)**: the 4k-persist and 4k loads sent by the same
  smtp-source straight to Postfix's \`smtp-sink\` (a small C event loop
  that answers every command and discards the mail: no relay, no disk).
  **sink_cpu_us_per_msg**: smtp-sink's CPU per message, what receiving
  alone costs a lean program; **source_cpu_us_per_msg**: smtp-source's
  (bash \`time\`), what sending alone costs one without pipelining. A
  relay receives every message as smtp-sink does, sends it upstream
  (pipelined: the sink's figure above is one side of that), and stores
  it durably in between; the targets' lines add the first two as the
  floor under the relay's CPU per message on this machine.
- **kill -9 at 10 ms**: N = $N_WAN messages accepted over the 10 ms link,
  postmark-relay killed with \`kill -9\` once a third reached the sink, then
  started again on the same queue; every message must arrive.
  **unrecorded_at_kill**: messages the sink had that were still queued at the
  kill (taken upstream, outcome not yet recorded); **duplicates**: sink total
  minus distinct Message-IDs after the restart.
- **idle_rss_mb**: postmark-relay's VmRSS 3 s after start, empty queue.
- **queue-id collisions**: $COLLISIONS run(s) had to be repeated because
  postmark-relay answered \`452 4.3.1\` to a duplicate queue id (ids are
  milliseconds + a per-process counter since this was found; anything but 0
  here is a regression).
- **backlog**: $N_BACKLOG messages inserted straight into SQLite (schema of
  crates/queue/src/schema.rs); time from starting \`serve\` to the first message
  at the sink, then the delivery rate over the next 5 s.

Both relays: SMTP on a loopback high port, relaying to the same Rust sink
(bench/sink: PIPELINING, AUTH PLAIN LOGIN answered \`235\`, no TLS) with the
token as SASL user and password, 20 upstream connections. postmark-relay:
\`tls = "none"\`, \`connections = 20\`, \`admin.listen = ""\`, log level warn.
Postfix: its own config and queue directory, \`relayhost = [127.0.0.1]:SINK\`,
\`smtp_sasl_auth_enable\`, \`smtp_tls_security_level = none\`, connection cache
on demand and for the relayhost, \`default_destination_concurrency_limit = 20\`,
other settings default (it logs to syslog; no syslog daemon ran here).

## Targets

$TARGETS
EOF
    } >"$doc.new"
    # Hand-written notes below the marker survive a re-run.
    if [ -f "$doc" ] && grep -q '^<!-- notes -->' "$doc"; then
        sed -n '/^<!-- notes -->/,$p' "$doc" >>"$doc.new"
    fi
    mv "$doc.new" "$doc"
    say "wrote $doc"
fi
