//! Who holds a lease, and keeping it while we live. Each [`super::PgQueue`]
//! has an identity (host name, process id and a random part, so a
//! restarted process is a new holder); claims record it, and a task renews
//! every lease it holds well before `queue.lease` runs out. So a live
//! replica never loses a message to another however long a delivery takes,
//! and a dead one's leases simply expire.

use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;

use crate::sql::millis;

/// This replica's name in `lease_owner`.
pub(crate) fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host}:{}:{:08x}", std::process::id(), fastrand::u32(..))
}

/// Renews this replica's leases every quarter lease, for ever (until
/// aborted). A failed renewal is retried at the next turn; only a database
/// outage longer than most of a lease lets one lapse.
pub(crate) async fn renew(pool: Pool, owner: String, lease: Duration) {
    let every = lease / 4;
    loop {
        tokio::time::sleep(every).await;
        let until = millis(SystemTime::now() + lease);
        let renewed = async {
            let client = pool.get().await?;
            client
                .execute(
                    "UPDATE messages SET lease_until = $2, next_attempt_at = $2
                     WHERE lease_owner = $1 AND lease_until IS NOT NULL",
                    &[&owner, &until],
                )
                .await
                .map_err(crate::QueueError::from)
        }
        .await;
        if let Err(e) = renewed {
            tracing::warn!(error = %e, "Cannot renew delivery leases in the shared queue.");
        }
    }
}
