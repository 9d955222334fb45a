//! [`PgQueue`]: the shared queue on PostgreSQL, for several relay replicas
//! at once. Same contract as [`crate::SqliteQueue`] (see the crate docs'
//! invariants), with these differences:
//!
//! - Tables live in their own schema ([`schema`]), created and migrated on
//!   start, safely when replicas start together.
//! - Enqueues are group-committed by one task ([`writer`]) with
//!   `synchronous_commit = on`; everything else runs on pooled connections
//!   ([`connect`]), each operation in its own transaction.
//! - Claims skip rows another replica is locking (`FOR UPDATE SKIP
//!   LOCKED`) and take only free or expired leases; each lease names its
//!   holder and is renewed while that holder lives ([`lease`]), moving
//!   `next_attempt_at` with it (invariant 4). Nothing is cleared at
//!   start: other replicas' leases are theirs.
//! - Every enqueue wakes every replica through LISTEN/NOTIFY ([`listen`]).
//! - Chunks of messages never enqueued are dropped at start only when
//!   they are old ([`ORPHAN_AGE`]): another replica may be receiving one.

mod connect;
mod finisher;
mod inspect;
mod lease;
mod listen;
mod schema;
mod sql;
mod writer;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, Notify, OnceCell};
use tokio::task::JoinHandle;

use crate::sql::{from_millis, millis};
use crate::{Claim, ClaimLimit, Finished, NewMessage, Outcome, Queue, QueueError, RetryPolicy};
use connect::Target;
pub use inspect::{Imported, PgInspector};

/// Chunks older than this without a message are leftovers of sessions
/// that died (no session lives this long between two chunks).
pub const ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// How to reach the shared queue.
#[derive(Clone)]
pub struct PgSettings {
    /// `postgres://user:password@host:port/db?sslmode=require`.
    pub url: String,
    /// Extra PEM roots for the server's certificate.
    pub ca_file: Option<PathBuf>,
    /// Schema holding the tables: a plain lowercase identifier (the config
    /// validates it).
    pub schema: String,
    /// How long a claim holds a message unless renewed.
    pub lease: Duration,
}

impl PgSettings {
    /// The shared queue at `url`, with the rest (`ca_file`, `schema`,
    /// `lease`) from the `[queue]` section.
    pub fn new(url: &str, queue: &relay_config::Queue) -> PgSettings {
        PgSettings {
            url: url.to_string(),
            ca_file: queue.ca_file.clone(),
            schema: queue.schema.clone(),
            lease: queue.lease,
        }
    }
}

impl fmt::Debug for PgSettings {
    /// Without the URL: it holds the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &"***")
            .field("ca_file", &self.ca_file)
            .field("schema", &self.schema)
            .field("lease", &self.lease)
            .finish()
    }
}

/// The PostgreSQL-backed queue. Cheap to clone; its background tasks
/// (group commit, LISTEN, lease renewal) stop with the last clone.
#[derive(Clone)]
pub struct PgQueue {
    pool: Pool,
    /// Set once the tables are known to be at this build's version.
    prepared: Arc<OnceCell<()>>,
    schema: Arc<str>,
    enqueues: mpsc::Sender<writer::Request>,
    /// To the group commit of fully delivered messages.
    finishes: mpsc::Sender<finisher::Request>,
    arrivals: Arc<Notify>,
    policy: Arc<RwLock<RetryPolicy>>,
    /// This replica's name on the leases it holds.
    owner: Arc<str>,
    lease: Duration,
    _tasks: Arc<Tasks>,
}

/// Background tasks, aborted when the last [`PgQueue`] clone goes.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl PgQueue {
    /// Connects, creates or migrates the tables, drops old orphan chunks,
    /// and starts the background tasks. Must run inside a tokio runtime.
    ///
    /// A database that does not answer yet is not an error: the queue
    /// opens, every operation fails as unreachable (sessions get `452`)
    /// and the first one after the database is back prepares the tables.
    /// A database that refuses the relay (wrong password, no such
    /// database, no rights) or a newer schema is an error: waiting would
    /// not fix it.
    pub async fn open(settings: &PgSettings, policy: RetryPolicy) -> Result<PgQueue, QueueError> {
        let target = Target::new(settings)?;
        let pool = target.pool()?;
        let arrivals = Arc::new(Notify::new());
        let channel = channel(&settings.schema);
        let (enqueues, requests) = mpsc::channel(crate::writer::MAX_BATCH * 4);
        let (finishes, finished) = mpsc::channel(crate::writer::MAX_BATCH * 4);
        let owner: Arc<str> = lease::identity().into();
        let tasks = vec![
            tokio::spawn(writer::run(
                pool.clone(),
                requests,
                channel.clone(),
                owner.clone(),
                arrivals.clone(),
            )),
            tokio::spawn(finisher::run(pool.clone(), finished)),
            tokio::spawn(listen::run(
                target,
                channel,
                owner.clone(),
                arrivals.clone(),
            )),
            tokio::spawn(lease::renew(
                pool.clone(),
                owner.to_string(),
                settings.lease,
            )),
        ];
        let queue = PgQueue {
            pool,
            prepared: Arc::new(OnceCell::new()),
            schema: settings.schema.clone().into(),
            enqueues,
            finishes,
            arrivals,
            policy: Arc::new(RwLock::new(policy)),
            owner,
            lease: settings.lease,
            _tasks: Arc::new(Tasks(tasks)),
        };
        match queue.prepare().await {
            Ok(()) => {
                tracing::info!(replica = %queue.owner, schema = %settings.schema, lease_s = settings.lease.as_secs_f64(), "Shared queue (PostgreSQL) ready.");
            }
            Err(e @ (QueueError::Settings(_) | QueueError::NewerSchema(_))) => return Err(e),
            Err(e) => {
                tracing::warn!(replica = %queue.owner, error = %e, "The shared queue (PostgreSQL) does not answer yet: new mail gets 452 and deliveries wait until it does.");
            }
        }
        Ok(queue)
    }

    /// Creates or migrates the tables once per process, on the first
    /// operation that reaches the database (a failed try is tried again
    /// by the next operation).
    async fn prepare(&self) -> Result<(), QueueError> {
        self.prepared
            .get_or_try_init(|| prepare(&self.pool, &self.schema))
            .await
            .map(|_| ())
    }

    /// A pooled connection to prepared tables.
    async fn client(&self) -> Result<deadpool_postgres::Object, QueueError> {
        self.prepare().await?;
        Ok(self.pool.get().await?)
    }

    /// Whether the queue can take new messages now: the database answers
    /// and is not a read-only standby.
    pub async fn check_writable(&self) -> Result<(), QueueError> {
        let client = self.client().await?;
        let read_only: bool = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await?
            .get(0);
        if read_only {
            return Err(QueueError::Unreachable(
                "the database is a read-only standby".into(),
            ));
        }
        Ok(())
    }

    /// Replaces the retry policy (on config reload) for every attempt this
    /// replica records from now on.
    pub async fn set_policy(&self, policy: RetryPolicy) -> Result<(), QueueError> {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = policy;
        Ok(())
    }

    /// Routes every waiting, unleased message again (on config reload);
    /// returns how many changed upstream or stream.
    pub async fn reroute(
        &self,
        route: impl Fn(&str, &[u8]) -> (String, Option<String>) + Send + Sync + 'static,
    ) -> Result<usize, QueueError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let changed = sql::reroute(&tx, &route, SystemTime::now()).await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// Drops up to `batch` history entries finished before `before`;
    /// returns how many. Replicas pruning at once skip each other's rows.
    pub async fn prune_history(
        &self,
        before: SystemTime,
        batch: usize,
    ) -> Result<usize, QueueError> {
        let client = self.client().await?;
        let limit = i64::try_from(batch).unwrap_or(i64::MAX);
        let n = client
            .execute(
                "DELETE FROM history WHERE id IN (
                     SELECT id FROM history WHERE finished_at < $1
                     ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
                &[&millis(before), &limit],
            )
            .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Counts by state and the oldest waiting message, for `/metrics`.
    pub async fn stats(&self) -> Result<crate::Stats, QueueError> {
        stats(&*self.client().await?).await
    }
}

/// Brings the tables in `schema` to this build's version and drops old
/// orphan chunks.
async fn prepare(pool: &Pool, schema: &str) -> Result<(), QueueError> {
    schema::migrate(pool, schema).await?;
    let orphans = pool
        .get()
        .await?
        .execute(
            "DELETE FROM chunks WHERE created_at < $1
               AND NOT EXISTS (SELECT 1 FROM messages WHERE id = chunks.message_id)",
            &[&millis(SystemTime::now() - ORPHAN_AGE)],
        )
        .await?;
    if orphans > 0 {
        tracing::info!(
            chunks = orphans,
            "Dropped old body chunks of messages never acknowledged."
        );
    }
    Ok(())
}

/// The NOTIFY channel that wakes every replica of the queue in `schema`.
fn channel(schema: &str) -> String {
    format!("{schema}_arrivals")
}

/// Counts by state and upstream, and the oldest waiting message.
async fn stats(client: &tokio_postgres::Client) -> Result<crate::Stats, QueueError> {
    let mut stats = crate::Stats::default();
    for row in client
        .query(
            "SELECT upstream, state, COUNT(*) FROM messages GROUP BY upstream, state",
            &[],
        )
        .await?
    {
        let (upstream, state, n): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
        let state: crate::State = state.parse().map_err(QueueError::Database)?;
        let n = n.max(0) as u64;
        stats.by_state.add(state, n);
        stats.by_upstream.entry(upstream).or_default().add(state, n);
    }
    let oldest: Option<i64> = client
        .query_one(
            "SELECT MIN(received_at) FROM messages WHERE state <> 'failed'",
            &[],
        )
        .await?
        .get(0);
    stats.oldest_received_at = oldest.map(from_millis);
    Ok(stats)
}

impl Queue for PgQueue {
    async fn enqueue(&self, message: NewMessage) -> Result<(), QueueError> {
        self.prepare().await?;
        let (reply, answer) = oneshot::channel();
        self.enqueues
            .send((message, reply))
            .await
            .map_err(|_| QueueError::WriterGone)?;
        answer.await.map_err(|_| QueueError::WriterGone)?
    }

    /// One autocommit insert without waiting for its WAL flush: the
    /// enqueue's synchronous commit, later in the same WAL, makes it
    /// durable.
    async fn append(&self, id: &str, seq: u32, chunk: Vec<u8>) -> Result<(), QueueError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO chunks (message_id, seq, data, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (message_id, seq) DO UPDATE SET data = EXCLUDED.data",
            )
            .await?;
        let seq = i32::try_from(seq).unwrap_or(i32::MAX);
        tx.execute(&insert, &[&id, &seq, &chunk, &millis(SystemTime::now())])
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn discard(&self, id: &str) -> Result<(), QueueError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        sql::discard(&tx, id).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn chunk(&self, id: &str, seq: u32) -> Result<Vec<u8>, QueueError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached("SELECT data FROM chunks WHERE message_id = $1 AND seq = $2")
            .await?;
        let seq_i = i32::try_from(seq).unwrap_or(i32::MAX);
        client
            .query_opt(&select, &[&id, &seq_i])
            .await?
            .map(|row| row.get(0))
            .ok_or_else(|| QueueError::MissingChunk(id.to_string(), seq))
    }

    /// Leases for `queue.lease` (renewed while this replica lives); the
    /// worker's own `lease` is a bound for one process and does not apply
    /// across replicas.
    async fn claim_due(
        &self,
        upstream: &str,
        limit: ClaimLimit,
        _lease: Duration,
    ) -> Result<Claim, QueueError> {
        let client = self.client().await?;
        sql::claim(
            &client,
            upstream,
            limit,
            self.lease,
            &self.owner,
            SystemTime::now(),
        )
        .await
    }

    async fn finish(
        &self,
        id: &str,
        outcomes: Vec<(i64, Outcome)>,
        error: Option<String>,
    ) -> Result<Finished, QueueError> {
        let policy = self
            .policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(delivered) = all_delivered(&outcomes) {
            self.prepare().await?;
            let (reply, answer) = oneshot::channel();
            self.finishes
                .send(finisher::Request {
                    id: id.to_owned(),
                    delivered,
                    keep_history: policy.keep_history,
                    reply,
                })
                .await
                .map_err(|_| QueueError::WriterGone)?;
            if answer.await.map_err(|_| QueueError::WriterGone)?? {
                return Ok(Finished::Delivered);
            }
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let finished = sql::finish(
            &tx,
            id,
            &outcomes,
            error.as_deref(),
            &policy,
            SystemTime::now(),
        )
        .await?;
        tx.commit().await?;
        Ok(finished)
    }

    async fn release(&self, id: &str) -> Result<(), QueueError> {
        let client = self.client().await?;
        let release = client
            .prepare_cached(
                "UPDATE messages SET lease_until = NULL, lease_owner = NULL, next_attempt_at = $2
                 WHERE id = $1",
            )
            .await?;
        client
            .execute(&release, &[&id, &millis(SystemTime::now())])
            .await?;
        Ok(())
    }

    /// A prepared statement, as every frequent one here: a plain query
    /// string costs a round trip more (tokio-postgres prepares it first)
    /// and a parse and plan each time.
    async fn next_due(&self, upstream: &str) -> Result<Option<SystemTime>, QueueError> {
        let client = self.client().await?;
        let next_due = client
            .prepare_cached(
                "SELECT next_attempt_at FROM messages
                 WHERE upstream = $1 AND next_attempt_at IS NOT NULL AND state <> 'failed'
                 ORDER BY next_attempt_at LIMIT 1",
            )
            .await?;
        let due: Option<i64> = client
            .query_opt(&next_due, &[&upstream])
            .await?
            .map(|row| row.get(0));
        Ok(due.map(from_millis))
    }

    async fn waiting(&self) -> Result<Vec<(String, u64)>, QueueError> {
        let client = self.client().await?;
        Ok(client
            .query(
                "SELECT upstream, COUNT(*) FROM messages WHERE state <> 'failed'
                 GROUP BY upstream ORDER BY upstream",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1).max(0) as u64))
            .collect())
    }

    fn arrivals(&self) -> Arc<Notify> {
        self.arrivals.clone()
    }
}

/// Each recipient's (index, reply) when every outcome is a delivery: the
/// case the finisher removes in a batch.
fn all_delivered(outcomes: &[(i64, Outcome)]) -> Option<Vec<(i64, String)>> {
    outcomes
        .iter()
        .map(|(idx, o)| match o {
            Outcome::Delivered(reply) => Some((*idx, reply.clone())),
            _ => None,
        })
        .collect()
}
