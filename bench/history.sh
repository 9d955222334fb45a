#!/usr/bin/env bash
# `postmark-relay history` on a delivery history of 1,000,000 messages
# (about 1.5 recipients each), on the embedded queue (SQLite) and on the
# shared queue (PostgreSQL): wall-clock time of the whole CLI process per
# filter, text and --json.
#
#   bench/history.sh              full run, writes its section of docs/BENCHMARKS.md
#   bench/history.sh --quick      10,000 messages, 1 repetition, writes nothing
#   options: --messages N (1000000)  --reps N (5; the median is shown)
#            --only sqlite|postgres  --no-doc  --keep (keep the work folder)
#   env:     BENCH_SKIP_BUILD=1: use RELAY_BIN as it is (default
#            target/release/postmark-relay); otherwise it is built first
#            (cargo build --release -p postmark-relay)
#            BENCH_RELAY_REV (what RELAY_BIN was built from, for the doc)
#            BENCH_PG_EXPLAIN=1: PostgreSQL logs each statement over 100 ms
#            with its plan and actual rows (auto_explain, in the work
#            folder's pg-slow-plans.log; instruments every query, so the
#            times are a little higher)
#
# Each store gets the relay's own schema: `postmark-relay serve` is started
# on it (no token: nothing is delivered) until it listens, then stopped.
# The history is then filled straight with SQL (sqlite3's recursive CTE,
# PostgreSQL's generate_series), the same rows in both, derived from the
# message number alone so every run has the same data:
#   - finished_at spread evenly over the last 7 days, received_at 0.2-5.2 s
#     before; ids as the relay makes them (11 hex digits of ms + 5 more)
#   - 1, 2 or 3 recipients (60/30/10 %): ~400,000 local parts at 5,000
#     domains, skewed as real mail is (the largest takes ~6 %, most few)
#   - 2 % of recipients failed with a 5xx, the others Postmark's 250
#   - 5,000 senders at 1,000 domains (skewed), one in ten with another
#     From:; 30 % from [[clients]]; 20 % on the broadcast stream
# PostgreSQL gets VACUUM ANALYZE after the fill (what autovacuum does after
# a bulk change); SQLite nothing (the relay never runs ANALYZE).
#
# Every command runs once unmeasured (warm page cache), then --reps times.
# Needs root: PostgreSQL (Debian's package, started here in the work folder
# on a free loopback port) runs as the postgres user. Installs sqlite3,
# postgresql and iproute2 (ss) from Debian if missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=1000000 REPS=5 WRITE_DOC=1 KEEP=0 ONLY=''
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) N=10000 REPS=1 WRITE_DOC=0 ;;
        --messages) N=$2 WRITE_DOC=0; shift ;;
        --reps) REPS=$2; shift ;;
        --only) ONLY=$2 WRITE_DOC=0; shift ;;
        --no-doc) WRITE_DOC=0 ;;
        --keep) KEEP=1 ;;
        *) echo "usage: bench/history.sh [--quick] [--messages N] [--reps N] [--only sqlite|postgres] [--no-doc] [--keep]" >&2; exit 64 ;;
    esac
    shift
done

say() { printf '[history-bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf '\n[history-bench] FAILED: %s\n\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }
commas() { sed -E ':a; s/^([0-9]+)([0-9]{3})/\1,\2/; ta' <<<"$1"; }

# ---------------------------------------------------------------- packages
[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL runs as the postgres user)"
missing=()
command -v sqlite3 >/dev/null || missing+=(sqlite3)
command -v ss >/dev/null || missing+=(iproute2)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---------------------------------------------------------------- cleanup
WORK=$(mktemp -d /var/tmp/pm-history-bench.XXXXXX)
chmod 755 "$WORK" # the postgres user keeps its cluster in here
PIDS=() PG_BIN=''
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    [ -z "$PG_BIN" ] || runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m fast stop >/dev/null 2>&1 || true
    if [ $KEEP = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- binary
RELAY_BIN=${RELAY_BIN:-$ROOT/target/release/postmark-relay}
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    say "building postmark-relay (release)"
    cargo build --release -p postmark-relay --manifest-path "$ROOT/Cargo.toml"
    RELAY_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/postmark-relay
fi
[ -x "$RELAY_BIN" ] || die "no binary at $RELAY_BIN"
# A copy, so a rebuild during the run cannot swap the binary between runs.
cp "$RELAY_BIN" "$WORK/postmark-relay"
BIN=$WORK/postmark-relay
# Nothing from this shell configures the relay.
for var in $(compgen -e | grep '^POSTMARK_' || true); do unset "$var"; done
unset RUST_LOG

# Starts `serve` on the [queue] section in file QUEUE_TOML until it
# listens (it has created or migrated the schema by then), then stops it.
make_schema() { # DIR QUEUE_TOML
    local dir=$1 log=$1/serve.log
    cat >"$dir/serve.toml" <<EOF
[server]
listen = ["127.0.0.1:0"]
$(cat "$2")
[admin]
listen = ""
[log]
level = "info"
EOF
    "$BIN" serve -c "$dir/serve.toml" 2>"$log" &
    local pid=$! deadline=$(($(date +%s) + 60))
    PIDS+=("$pid")
    until grep -q 'Listening for SMTP' "$log"; do
        kill -0 "$pid" 2>/dev/null || die "serve exited before listening: $(tail -3 "$log")"
        [ "$(date +%s)" -lt "$deadline" ] || die "serve did not listen within 60 s: $(tail -3 "$log")"
        sleep 0.1
    done
    kill -TERM "$pid"
    wait "$pid" || die "serve did not stop cleanly: $(tail -3 "$log")"
}

# ---------------------------------------------------------------- the data
# One "now" for both stores, so they hold the same rows.
NOW=$(now_ms)
SPAN=$((7 * 86400 * 1000 - 60000))
START=$((NOW - 7 * 86400 * 1000))
# Per message i (1..N), in both SQL dialects: three 32-bit hashes of i,
# the finish and receipt times, the recipient count.
H1="(i * 2654435761) % 4294967296"
H2="(i * 2246822519) % 4294967296"
H3="(i * 3266489917) % 4294967296"
FIN="($START + i * $SPAN / $N)"
NRCPT="(CASE WHEN $H1 % 10 < 6 THEN 1 WHEN $H1 % 10 < 9 THEN 2 ELSE 3 END)"
# Per recipient (message i, index j): two hashes; the domain skewed
# towards the first ones (5000 * u^3).
G1="(((i * 4 + j) * 668265263) % 4294967296)"
G2="(((i * 4 + j) * 374761393) % 4294967296)"
SENDER_NO="(5000 * (($H2) / 4294967296.0) * (($H2) / 4294967296.0))"
DOMAIN_NO="(5000 * ($G1 / 4294967296.0) * ($G1 / 4294967296.0) * ($G1 / 4294967296.0))"
FAILED_REPLY="550 5.1.1 The email account that you tried to reach does not exist"

fill_sqlite() { # DB
    sqlite3 "$1" <<EOF
PRAGMA synchronous = OFF;
PRAGMA cache_size = -262144;
PRAGMA temp_store = MEMORY;
CREATE TEMP TABLE gen AS
WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < $N)
SELECT i, $FIN - 200 - ($H3) % 5000 AS rec, $FIN AS fin, $H1 AS h1, $H2 AS h2, $H3 AS h3,
       CAST($SENDER_NO AS INTEGER) AS s, $NRCPT AS nrcpt
FROM k;
BEGIN;
INSERT INTO history (id, received_at, finished_at, client, sender, from_addr, subject,
                     upstream, stream, attempts)
SELECT printf('%011X%05X', rec, i % 1048576), rec, fin,
       CASE h2 % 10 WHEN 0 THEN 'billing' WHEN 1 THEN 'news' WHEN 2 THEN 'crm' END,
       printf('s%d@app%d.example', s, s % 1000),
       CASE WHEN h3 % 10 = 0 THEN printf('hello@app%d.example', s % 1000)
            ELSE printf('s%d@app%d.example', s, s % 1000) END,
       printf('Your receipt #%d', i),
       CASE WHEN h3 % 5 = 0 THEN 'broadcast' ELSE 'transactional' END,
       CASE WHEN h3 % 5 = 0 THEN 'broadcasts' END,
       1
FROM gen;
INSERT INTO history_recipients (message_id, idx, address, state, reply)
SELECT printf('%011X%05X', rec, i % 1048576), j,
       printf('u%d@mail%d.example', $G2 % 400000, CAST($DOMAIN_NO AS INTEGER)),
       CASE WHEN $G2 % 50 = 0 THEN 'failed' ELSE 'delivered' END,
       CASE WHEN $G2 % 50 = 0 THEN '$FAILED_REPLY'
            ELSE printf('250 2.0.0 Ok: queued as %08x-%04x-%04x-%04x-%012x',
                        $G1, $G2 % 65536, ($G1 / 65536) % 65536, i % 65536, i * 7919) END
FROM gen JOIN (SELECT 0 AS j UNION ALL SELECT 1 UNION ALL SELECT 2) ON j < nrcpt;
COMMIT;
DROP TABLE gen;
EOF
}

fill_postgres() {
    # Hashes to [0, 1) in double precision, as SQLite does (not numeric).
    local SENDER_NO=${SENDER_NO//4294967296.0/4294967296::float8}
    local DOMAIN_NO=${DOMAIN_NO//4294967296.0/4294967296::float8}
    pg_sql relay "
SET search_path = postmark_relay;
CREATE TEMP TABLE gen AS
SELECT i, $FIN - 200 - ($H3) % 5000 AS rec, $FIN AS fin, $H1 AS h1, $H2 AS h2, $H3 AS h3,
       floor($SENDER_NO)::bigint AS s, $NRCPT AS nrcpt
FROM generate_series(1::bigint, $N) AS i;
INSERT INTO history (id, received_at, finished_at, client, sender, from_addr, subject,
                     upstream, stream, attempts)
SELECT lpad(upper(to_hex(rec)), 11, '0') || lpad(upper(to_hex(i % 1048576)), 5, '0'), rec, fin,
       CASE h2 % 10 WHEN 0 THEN 'billing' WHEN 1 THEN 'news' WHEN 2 THEN 'crm' END,
       format('s%s@app%s.example', s, s % 1000),
       CASE WHEN h3 % 10 = 0 THEN format('hello@app%s.example', s % 1000)
            ELSE format('s%s@app%s.example', s, s % 1000) END,
       format('Your receipt #%s', i),
       CASE WHEN h3 % 5 = 0 THEN 'broadcast' ELSE 'transactional' END,
       CASE WHEN h3 % 5 = 0 THEN 'broadcasts' END,
       1
FROM gen;
INSERT INTO history_recipients (message_id, idx, address, state, reply)
SELECT lpad(upper(to_hex(rec)), 11, '0') || lpad(upper(to_hex(i % 1048576)), 5, '0'), j,
       format('u%s@mail%s.example', $G2 % 400000, floor($DOMAIN_NO)::bigint),
       CASE WHEN $G2 % 50 = 0 THEN 'failed' ELSE 'delivered' END,
       CASE WHEN $G2 % 50 = 0 THEN '$FAILED_REPLY'
            ELSE format('250 2.0.0 Ok: queued as %s-%s-%s-%s-%s',
                        lpad(to_hex($G1), 8, '0'), lpad(to_hex($G2 % 65536), 4, '0'),
                        lpad(to_hex(($G1 / 65536) % 65536), 4, '0'), lpad(to_hex(i % 65536), 4, '0'),
                        lpad(to_hex(i * 7919), 12, '0')) END
FROM gen CROSS JOIN generate_series(0, 2) AS j WHERE j < nrcpt;
DROP TABLE gen;
" >/dev/null
    pg_sql relay "VACUUM ANALYZE postmark_relay.history" >/dev/null
    pg_sql relay "VACUUM ANALYZE postmark_relay.history_recipients" >/dev/null
}

# ---------------------------------------------------------------- PostgreSQL
PG_PORT='' PG_URL=''
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 40000))
        ss -Hltn "sport = :$port" | grep -q . || { echo "$port"; return; }
    done
}
pg_start() {
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    PG_PORT=$(free_port)
    mkdir -p "$WORK/pg"
    chown postgres "$WORK/pg"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$WORK/pg/data" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 -E UTF8 --no-instructions >"$WORK/pg/initdb.log" 2>&1 \
        || die "initdb failed: $(tail -3 "$WORK/pg/initdb.log")"
    local explain=''
    [ "${BENCH_PG_EXPLAIN:-0}" = 1 ] && explain="-c shared_preload_libraries=auto_explain -c auto_explain.log_min_duration=100ms -c auto_explain.log_analyze=on"
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/server.log" -w -t 60 \
        -o "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1 $explain" \
        start >/dev/null || die "PostgreSQL did not start: $(tail -3 "$WORK/pg/server.log")"
    pg_sql postgres "CREATE ROLE relay LOGIN PASSWORD 'bench'" >/dev/null
    pg_sql postgres "CREATE DATABASE relay OWNER relay" >/dev/null
    PG_URL="postgres://relay:bench@127.0.0.1:$PG_PORT/relay"
    say "PostgreSQL $("$PG_BIN/postgres" --version | awk '{ print $3 }') on port $PG_PORT"
}
pg_sql() { # DB SQL: tuples only
    runuser -u postgres -- "$PG_BIN/psql" -h "$WORK/pg" -p "$PG_PORT" -U postgres -d "$1" -qAt -v ON_ERROR_STOP=1 -c "$2"
}

# ---------------------------------------------------------------- timing
RESULTS=$WORK/results.tsv
: >"$RESULTS"
# Median wall-clock seconds of REPS runs of `history ARGS` (after one
# warm-up); fails unless every run exits 0.
time_cli() { # CONFIG ARGS...
    local config=$1 t0 t1 times=()
    shift
    "$BIN" history -c "$config" "$@" >"$WORK/last.out" 2>"$WORK/last.err" \
        || die "history $*: $(cat "$WORK/last.err")"
    for _ in $(seq "$REPS"); do
        t0=${EPOCHREALTIME/./}
        "$BIN" history -c "$config" "$@" >/dev/null 2>&1 || die "history $* failed"
        t1=${EPOCHREALTIME/./}
        times+=($((t1 - t0)))
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { printf "%.3f", a[int((NR + 1) / 2)] / 1e6 }'
}
# What the text output shows: lines (one per matching recipient).
shown() { wc -l <"$WORK/last.out" | tr -d ' '; }

bench_store() { # NAME CONFIG
    local name=$1 config=$2 label args text json lines argv
    # label|arguments (one per line; arguments split on spaces, no globbing)
    while IFS='|' read -r label args; do
        read -ra argv <<<"$args"
        text=$(time_cli "$config" "${argv[@]}")
        lines=$(shown)
        json=$(time_cli "$config" "${argv[@]}" --json)
        printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$label" "$text" "$json" "$lines" >>"$RESULTS"
        say "$name: $label: ${text} s text ($lines lines), ${json} s --json"
    done <<EOF
--to <rare address> (exact, other case)|--to $RARE_UPPER
--to '*@<largest domain>'|--to *@$BIG_DOMAIN
--to '*@<small domain>'|--to *@$SMALL_DOMAIN
--from <sender>|--from $SENDER
--state failed|--state failed
--state delivered|--state delivered
--since 1h|--since 1h
--id <id>|--id $SOME_ID
no filter (newest 50)|
EOF
}

# ---------------------------------------------------------------- run
# The probes: from the data, the same in both stores.
MID=$((N / 2))
SOME_ID='' RARE='' RARE_UPPER='' BIG_DOMAIN=mail0.example SMALL_DOMAIN=mail4000.example SENDER=''

if [ "$ONLY" != postgres ]; then
    mkdir -p "$WORK/sqlite"
    printf '[queue]\npath = "%s"\n' "$WORK/sqlite/queue" >"$WORK/sqlite/queue.toml"
    make_schema "$WORK/sqlite" "$WORK/sqlite/queue.toml"
    DB=$WORK/sqlite/queue/queue.sqlite3
    say "filling SQLite with $N messages"
    t=$(now_ms)
    fill_sqlite "$DB"
    FILL_SQLITE_S=$(awk -v a="$t" -v b="$(now_ms)" 'BEGIN { printf "%.0f", (b - a) / 1000 }')
    read -r messages recipients < <(sqlite3 -separator ' ' "$DB" \
        "SELECT (SELECT count(*) FROM history), (SELECT count(*) FROM history_recipients)")
    say "SQLite: $messages messages, $recipients recipients in ${FILL_SQLITE_S} s, $(du -h "$DB" | cut -f1)"
    SQLITE_SIZE=$(du -m "$DB" | cut -f1)
fi
if [ "$ONLY" != sqlite ]; then
    pg_start
    printf '[queue]\nbackend = "postgres"\nurl = "%s"\n' "$PG_URL" >"$WORK/pg/queue.toml"
    make_schema "$WORK/pg" "$WORK/pg/queue.toml"
    say "filling PostgreSQL with $N messages"
    t=$(now_ms)
    fill_postgres
    FILL_PG_S=$(awk -v a="$t" -v b="$(now_ms)" 'BEGIN { printf "%.0f", (b - a) / 1000 }')
    PG_SIZE=$(pg_sql relay "SELECT pg_size_pretty(pg_database_size('relay'))")
    say "PostgreSQL: filled in ${FILL_PG_S} s, $PG_SIZE"
fi
# Both stores must hold the same rows (the probes and the table assume it).
SIGNATURE="SELECT count(*), sum(length(address)), sum(CASE WHEN state = 'failed' THEN 1 ELSE 0 END),
                  sum(length(reply)), min(message_id), max(message_id) FROM history_recipients"
if [ -z "$ONLY" ]; then
    lite=$(sqlite3 "$DB" "$SIGNATURE")
    pg=$(pg_sql relay "SET search_path = postmark_relay; $SIGNATURE")
    [ "$lite" = "$pg" ] || die "the stores differ: SQLite $lite, PostgreSQL $pg"
fi
# Probes from whichever store there is (both hold the same rows).
probe() { # SQL (standard enough for both)
    if [ "$ONLY" != postgres ]; then sqlite3 "$DB" "$1"; else pg_sql relay "SET search_path = postmark_relay; $1"; fi
}
SOME_ID=$(probe "SELECT id FROM history ORDER BY id LIMIT 1 OFFSET $MID")
# An address at a domain past the head that no other message has.
RARE=$(probe "SELECT address FROM history_recipients WHERE message_id >= '$SOME_ID' AND address LIKE '%@mail3%' ORDER BY message_id, idx LIMIT 1")
RARE_UPPER=$(printf '%s' "$RARE" | tr '[:lower:]' '[:upper:]')
SENDER=$(probe "SELECT sender FROM history WHERE id = '$SOME_ID'")
RARE_COUNT=$(probe "SELECT count(*) FROM history_recipients WHERE address = '$RARE'")
BIG_COUNT=$(probe "SELECT count(*) FROM history_recipients WHERE address LIKE '%@$BIG_DOMAIN'")
SMALL_COUNT=$(probe "SELECT count(*) FROM history_recipients WHERE address LIKE '%@$SMALL_DOMAIN'")
SENDER_COUNT=$(probe "SELECT count(*) FROM history WHERE sender = '$SENDER' OR from_addr = '$SENDER'")
FAILED_COUNT=$(probe "SELECT count(*) FROM history_recipients WHERE state = 'failed'")
say "probes: $RARE ($RARE_COUNT), *@$BIG_DOMAIN ($BIG_COUNT), *@$SMALL_DOMAIN ($SMALL_COUNT), $SENDER ($SENDER_COUNT), failed ($FAILED_COUNT), id $SOME_ID"

[ "$ONLY" = postgres ] || bench_store sqlite "$WORK/sqlite/queue.toml"
[ "$ONLY" = sqlite ] || bench_store postgres "$WORK/pg/queue.toml"
if [ "$ONLY" != sqlite ] && [ "${BENCH_PG_EXPLAIN:-0}" = 1 ]; then
    cp "$WORK/pg/server.log" "$WORK/pg-slow-plans.log"
    say "PostgreSQL statements over 100 ms, with plans: $WORK/pg-slow-plans.log (--keep keeps it)"
fi

# ---------------------------------------------------------------- report
table() {
    echo "| query | SQLite text | SQLite --json | PostgreSQL text | PostgreSQL --json | lines shown |"
    echo "|---|---:|---:|---:|---:|---:|"
    awk -F'\t' '
        { key = $2; if (!(key in seen)) { order[++n] = key; seen[key] = 1 }
          t[$1, key] = $3; j[$1, key] = $4; l[key] = $5 }
        END { for (i = 1; i <= n; i++) { k = order[i]
                printf "| `%s` | %s | %s | %s | %s | %s |\n", k,
                    (("sqlite", k) in t) ? t["sqlite", k] : "", (("sqlite", k) in j) ? j["sqlite", k] : "",
                    (("postgres", k) in t) ? t["postgres", k] : "", (("postgres", k) in j) ? j["postgres", k] : "", l[k] } }' "$RESULTS"
}
table

if [ $WRITE_DOC = 1 ]; then
    doc=$ROOT/docs/BENCHMARKS.md
    rev=${BENCH_RELAY_REV:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}
    section=$WORK/section.md
    {
        cat <<EOF
<!-- history:begin (written by bench/history.sh; notes go below history:end) -->
## Delivery history at 1,000,000 messages

\`postmark-relay history\` on a delivery history of $(commas "$N") messages
($(commas "$recipients") recipients), the same rows on each store:
wall-clock seconds of the whole CLI process (start, config, open the
store, query, print), median of $REPS runs after one unmeasured run.
$(date +%F), release build of git $rev, on the machine above (2 cores,
shared; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)).
Re-run with:

\`\`\`sh
bench/history.sh     # or: BENCH_SKIP_BUILD=1 RELAY_BIN=path/to/postmark-relay bench/history.sh
\`\`\`

$(table)

- Data (see the script's header; derived from the message number alone):
  finished over the last 7 days; 1, 2 or 3 recipients (60/30/10 %) among
  ~400,000 local parts at 5,000 domains, skewed like real mail; 2 % of
  recipients failed; 5,000 senders. SQLite file: $SQLITE_SIZE MiB, filled
  in $FILL_SQLITE_S s. PostgreSQL database: $PG_SIZE, filled in $FILL_PG_S s,
  then VACUUM ANALYZE.
- Probes: rare address: \`$RARE\` ($(commas "$RARE_COUNT") recipient), asked
  in upper case. Largest domain: \`$BIG_DOMAIN\` ($(commas "$BIG_COUNT")
  recipients). Small domain: \`$SMALL_DOMAIN\` ($(commas "$SMALL_COUNT")).
  Sender: \`$SENDER\` ($(commas "$SENDER_COUNT") messages). Failed:
  $(commas "$FAILED_COUNT") recipients. \`--since 1h\`: ~$(commas $((N / 168)))
  messages.
- Every query prints at most 50 messages (the default \`--limit\`); "lines
  shown" counts the text output's lines (one per matching recipient).
- PostgreSQL 15 (Debian's package, default settings) over TCP on
  loopback, the relay's own schema (made by \`serve\`), queried as the
  relay's role.
<!-- history:end -->
EOF
    } >"$section"
    if grep -q '^<!-- history:begin' "$doc"; then
        awk -v section="$section" '
            /^<!-- history:begin/ { while ((getline line < section) > 0) print line; skip = 1; next }
            /^<!-- history:end/ { skip = 0; next }
            !skip { print }' "$doc" >"$doc.new"
    else
        { cat "$doc"; echo; cat "$section"; } >"$doc.new"
    fi
    mv "$doc.new" "$doc"
    say "wrote $doc"
fi
