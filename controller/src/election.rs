//! One writer among several replicas: the etcd election API (`campaign` on a lease, as
//! `etcdctl elect` does). The leader key's create revision is the [`Fence`] every write is
//! conditional on, so a replica that lost its lease cannot write even if it does not know yet.

use std::time::Duration;

use etcd_client::{Client, LeaderKey, ResignOptions};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::store::{Fence, StoreError};

/// Bound on resigning and revoking, so SIGTERM does not hang on a silent etcd.
const STEP_DOWN: Duration = Duration::from_secs(2);

/// Leadership won in an election; lost when the lease cannot be kept alive.
pub struct Leadership {
    client: Client,
    leader: LeaderKey,
    lease: i64,
    lost: CancellationToken,
    keepalive: JoinHandle<()>,
}

/// Campaigns for `name` as `id` on a lease of `ttl` until elected. A replica that stops
/// without resigning (SIGKILL, lost node) is replaced when its lease expires, after at most
/// `ttl`.
pub async fn campaign(
    client: &Client,
    name: &str,
    id: &str,
    ttl: Duration,
) -> Result<Leadership, StoreError> {
    let mut client = client.clone();
    let secs = i64::try_from(ttl.as_secs().max(2)).unwrap_or(i64::MAX);
    let lease = client
        .lease_grant(secs, None)
        .await
        .map_err(|source| StoreError::Etcd {
            what: "lease grant",
            source,
        })?
        .id();
    let lost = CancellationToken::new();
    let keepalive = tokio::spawn(keep_alive(
        client.clone(),
        lease,
        Duration::from_secs(secs.unsigned_abs()),
        lost.clone(),
    ));
    let campaign = async {
        tokio::select! {
            r = client.campaign(name, id, lease) => r.map_err(|source| StoreError::Etcd { what: "campaign", source }),
            () = lost.cancelled() => Err(StoreError::LostLeadership(name.to_owned())),
        }
    };
    match campaign.await {
        Ok(mut resp) if resp.leader().is_some() => Ok(Leadership {
            client,
            leader: resp.take_leader().unwrap_or_default(),
            lease,
            lost,
            keepalive,
        }),
        other => {
            keepalive.abort();
            let _ = tokio::time::timeout(STEP_DOWN, client.lease_revoke(lease)).await;
            other.and(Err(StoreError::LostLeadership(name.to_owned())))
        }
    }
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("key", &String::from_utf8_lossy(self.leader.key()))
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Leadership {
    /// The condition every write must carry.
    pub fn fence(&self) -> Fence {
        Fence {
            key: self.leader.key().to_vec(),
            revision: self.leader.rev(),
        }
    }

    /// Fires when the lease could not be kept alive.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Steps down at once (SIGTERM, `--once`), so a standby takes over without waiting for
    /// the lease to expire.
    pub async fn resign(mut self) {
        self.keepalive.abort();
        let opts = ResignOptions::new().with_leader(self.leader.clone());
        match tokio::time::timeout(STEP_DOWN, self.client.resign(Some(opts))).await {
            Ok(Ok(_)) => info!("resigned leadership"),
            Ok(Err(e)) => warn!(error = %e, "could not resign; the lease will expire instead"),
            Err(_) => warn!("etcd did not answer the resignation; the lease will expire instead"),
        }
        let _ = tokio::time::timeout(STEP_DOWN, self.client.lease_revoke(self.lease)).await;
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

/// Refreshes the lease every third of its TTL; on failure retries until the TTL since the
/// last refresh has passed, then reports the leadership lost.
async fn keep_alive(mut client: Client, lease: i64, ttl: Duration, lost: CancellationToken) {
    let mut last_ok = Instant::now();
    let mut stream = None;
    loop {
        if last_ok.elapsed() >= ttl {
            warn!(
                lease,
                ?ttl,
                "lease not refreshed within its TTL: leadership lost"
            );
            lost.cancel();
            return;
        }
        if stream.is_none() {
            let left = ttl.saturating_sub(last_ok.elapsed());
            stream = tokio::time::timeout(left, client.lease_keep_alive(lease))
                .await
                .ok()
                .and_then(Result::ok);
        }
        let ok = match stream.as_mut() {
            Some((keeper, responses)) => {
                let sent = keeper.keep_alive().await.is_ok();
                let answer = tokio::time::timeout(
                    ttl.saturating_sub(last_ok.elapsed()),
                    responses.message(),
                )
                .await;
                match answer {
                    Ok(Ok(Some(r))) if sent && r.ttl() > 0 => true,
                    Ok(Ok(Some(_))) => {
                        warn!(lease, "lease expired: leadership lost");
                        lost.cancel();
                        return;
                    }
                    _ => false,
                }
            }
            None => false,
        };
        if ok {
            last_ok = Instant::now();
            tokio::time::sleep(ttl / 3).await;
        } else {
            stream = None;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
