//! Lease renewal: a pull's lease must not expire under a slow but live
//! download. While the work a lease protects is running, its expiry is pushed
//! forward whenever less than half of its duration is left, so a live pull
//! always holds at least half a lease of protection, and an abandoned lease
//! (the process died) still expires one duration after its last renewal.

use std::future::Future;
use std::time::Duration;

use crate::metadata::MetadataStore;

/// The expiry to set at `now_unix_ms`, or `None` while more than half of
/// `duration_ms` is left.
pub fn renewed_expiry_unix_ms(
    expires_unix_ms: u64,
    now_unix_ms: u64,
    duration_ms: u64,
) -> Option<u64> {
    let left_ms = expires_unix_ms.saturating_sub(now_unix_ms);
    (left_ms < duration_ms / 2).then(|| now_unix_ms + duration_ms)
}

/// Runs `work` while renewing lease `lease_id` (of `duration_ms`): checked
/// every quarter of the duration, renewed when half of it is gone. Renewal
/// stops with `work`, or when the lease no longer exists (released).
pub async fn renew_while<T>(
    metadata: &MetadataStore,
    lease_id: &str,
    duration_ms: u64,
    work: impl Future<Output = T>,
) -> T {
    let check_interval = Duration::from_millis((duration_ms / 4).max(1));
    let renewing = async {
        loop {
            tokio::time::sleep(check_interval).await;
            match renew_if_due(metadata, lease_id, duration_ms) {
                Ok(true) => {}
                Ok(false) => break,
                // The next check tries again; until then the lease still has
                // at least a quarter of its duration.
                Err(error) => tracing::warn!(lease = %lease_id, %error, "cannot renew lease"),
            }
        }
        // Released: nothing left to renew, and `work` decides the outcome.
        std::future::pending::<T>().await
    };
    tokio::pin!(work);
    tokio::select! {
        biased;
        output = &mut work => output,
        output = renewing => output,
    }
}

/// Renews lease `lease_id` if it is due; returns whether the lease still exists.
fn renew_if_due(
    metadata: &MetadataStore,
    lease_id: &str,
    duration_ms: u64,
) -> Result<bool, crate::metadata::MetadataError> {
    // Read first, so that a check with nothing to do writes nothing.
    let Some(lease) = metadata.read()?.lease(lease_id)? else {
        return Ok(false);
    };
    let now = crate::metadata::unix_millis_now();
    if renewed_expiry_unix_ms(lease.expires_unix_ms, now, duration_ms).is_none() {
        return Ok(true);
    }
    metadata.write(|txn| {
        let now = txn.now_unix_ms();
        let Some(lease) = txn.lease(lease_id)? else {
            return Ok(false);
        };
        if let Some(expires_unix_ms) =
            renewed_expiry_unix_ms(lease.expires_unix_ms, now, duration_ms)
        {
            txn.set_lease_expiry(lease_id, expires_unix_ms)?;
        }
        Ok(true)
    })
}
