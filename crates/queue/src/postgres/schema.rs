//! The shared queue's tables, created and migrated on start inside the
//! configured schema. Several replicas may start at the same moment: the
//! migration runs in one transaction under a transaction-scoped advisory
//! lock, so exactly one of them builds each version and the others then
//! find it done. Needs no superuser: only `CREATE` on the database (which
//! its owner has).

use deadpool_postgres::Pool;

use crate::QueueError;

/// The version this build writes.
pub const VERSION: i32 = 4;

/// Key of the advisory lock that serialises migrations (any constant
/// works; this one spells "pmrelay" in ASCII).
const MIGRATION_LOCK: i64 = 0x0070_6d72_656c_6179;

/// Version 1: SQLite schema 2's tables (times in Unix milliseconds; the
/// message as head, chunks, tail) plus the lease's owner.
const V1: &str = "
CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    received_at     BIGINT NOT NULL,
    sender          TEXT NOT NULL,
    upstream        TEXT NOT NULL,
    stream          TEXT,
    size            BIGINT NOT NULL,
    head            BYTEA NOT NULL,
    chunks          INTEGER NOT NULL,
    data            BYTEA NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    lease_until     BIGINT,
    lease_owner     TEXT,
    last_error      TEXT
);
CREATE INDEX messages_due ON messages (upstream, next_attempt_at);
CREATE INDEX messages_lease_owner ON messages (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE TABLE recipients (
    message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    idx        BIGINT NOT NULL,
    address    TEXT NOT NULL,
    state      TEXT NOT NULL,
    reply      TEXT,
    PRIMARY KEY (message_id, idx)
);
CREATE TABLE chunks (
    message_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    data       BYTEA NOT NULL,
    -- When the chunk arrived: chunks of a message never enqueued are
    -- dropped once they are old enough that no session can still own them.
    created_at BIGINT NOT NULL,
    PRIMARY KEY (message_id, seq)
);
";

/// Version 2: whether a message has 8-bit bytes (`BODY=8BITMIME`).
const V1_TO_V2: &str = "
ALTER TABLE messages ADD COLUMN eight_bit BOOLEAN NOT NULL DEFAULT false;
";

/// Version 3: as SQLite schema 4, the client, `From:` and `Subject:` of
/// each message and the delivery history (address filters match
/// case-insensitively through `lower()` indexes).
const V2_TO_V3: &str = "
ALTER TABLE messages ADD COLUMN client TEXT;
ALTER TABLE messages ADD COLUMN from_addr TEXT;
ALTER TABLE messages ADD COLUMN subject TEXT;
CREATE TABLE history (
    id          TEXT PRIMARY KEY,
    received_at BIGINT NOT NULL,
    finished_at BIGINT NOT NULL,
    client      TEXT,
    sender      TEXT NOT NULL,
    from_addr   TEXT,
    subject     TEXT,
    upstream    TEXT NOT NULL,
    stream      TEXT,
    attempts    INTEGER NOT NULL
);
CREATE INDEX history_finished ON history (finished_at);
CREATE INDEX history_sender ON history (lower(sender) text_pattern_ops);
CREATE INDEX history_from ON history (lower(from_addr) text_pattern_ops);
CREATE TABLE history_recipients (
    message_id TEXT NOT NULL REFERENCES history (id) ON DELETE CASCADE,
    idx        BIGINT NOT NULL,
    address    TEXT NOT NULL,
    state      TEXT NOT NULL,
    reply      TEXT,
    PRIMARY KEY (message_id, idx)
);
CREATE INDEX history_recipients_address ON history_recipients (lower(address) text_pattern_ops);
";

/// Version 4: as SQLite schema 5, the failed recipients of the history in
/// an index of their own (`history --state failed`).
const V3_TO_V4: &str = "
CREATE INDEX history_recipients_failed ON history_recipients (message_id) WHERE state = 'failed';
CREATE INDEX history_recipients_reversed ON history_recipients (reverse(lower(address)) text_pattern_ops);
";

/// Creates `schema` and brings its tables to [`VERSION`]; a newer
/// version is an error (a newer relay wrote it).
pub async fn migrate(pool: &Pool, schema: &str) -> Result<(), QueueError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         SET LOCAL search_path = {schema};
         CREATE TABLE IF NOT EXISTS version (version INTEGER NOT NULL);"
    ))
    .await?;
    let version: i32 = tx
        .query_opt("SELECT version FROM version", &[])
        .await?
        .map_or(0, |row| row.get(0));
    let steps: &[&str] = match version {
        0 => &[V1, V1_TO_V2, V2_TO_V3, V3_TO_V4],
        1 => &[V1_TO_V2, V2_TO_V3, V3_TO_V4],
        2 => &[V2_TO_V3, V3_TO_V4],
        3 => &[V3_TO_V4],
        VERSION => &[],
        newer => return Err(QueueError::NewerSchema(i64::from(newer))),
    };
    for step in steps {
        tx.batch_execute(step).await?;
    }
    if version != VERSION {
        tx.execute("DELETE FROM version", &[]).await?;
        tx.execute("INSERT INTO version (version) VALUES ($1)", &[&VERSION])
            .await?;
        tracing::info!(
            schema,
            version = VERSION,
            "Created the shared queue's tables."
        );
    }
    tx.commit().await?;
    Ok(())
}
