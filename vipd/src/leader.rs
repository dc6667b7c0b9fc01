//! The Lease, at the edge: reads and writes it as [`Elector`] decides (the rules are in
//! [`crate::lease`]), publishes until when we lead, and releases it on shutdown.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::lease::{self, Clamped, Elector, Seen, Step};

/// This process's Lease holder identity: `<node>_<random>` ([`lease::identity`]), the random
/// part read from `/dev/urandom` (the process id and the clock if that cannot be read).
pub fn process_identity(node: &str) -> String {
    use std::io::Read;
    let mut random = [0u8; 8];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut random));
    if let Err(e) = read {
        warn!(error = %e, "cannot read /dev/urandom: the Lease identity uses the pid and clock");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        random = ((u64::from(std::process::id()) << 32) | u64::from(nanos)).to_be_bytes();
    }
    lease::identity(node, random)
}

/// The error of a request that did not answer in time.
fn timed_out() -> kube::Error {
    kube::Error::Service(Box::new(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the API server did not answer in time",
    )))
}

fn micro_now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// Keeps trying to hold the Lease; publishes until when we lead (`None`: we do not).
pub async fn keep_lease(
    api: Api<Lease>,
    name: String,
    secs: i32,
    mut elector: Elector,
    lead: watch::Sender<Option<Instant>>,
    cancel: CancellationToken,
) {
    let mut failing = false;
    let own = Duration::from_secs(secs.unsigned_abs().into());
    let mut clamped: Option<Clamped> = None;
    loop {
        let started = Instant::now();
        let mut next = started + elector.retry_period();
        // Every request is bounded by the retry period: a server that accepts and never answers
        // must not freeze the loop (we stop leading at the renew deadline anyway).
        let bound = elector.retry_period().max(Duration::from_secs(1));
        let read = tokio::time::timeout(bound, api.get_opt(&name))
            .await
            .unwrap_or_else(|_| Err(timed_out()));
        match read {
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    warn!(lease = %name, error = %e, "cannot read the Lease");
                }
            }
            Ok(lease) => {
                failing = false;
                let seen = lease.as_ref().map(|l| {
                    let spec = l.spec.clone().unwrap_or_default();
                    let holder = spec.holder_identity.unwrap_or_default();
                    let (duration, why) = lease::lease_duration(spec.lease_duration_seconds, own);
                    // Only another holder's duration matters (ours is our own flag).
                    if !holder.is_empty() && holder != elector.me() && why != clamped {
                        if let Some(why) = why {
                            warn!(lease = %name, %holder, written = ?why, used = ?duration,
                                "the Lease's leaseDurationSeconds is unusable: clamped");
                        }
                        clamped = why;
                    }
                    Seen {
                        holder,
                        version: l.resource_version().unwrap_or_default(),
                        duration,
                    }
                });
                // A standby looks again every retry period (not only at the expiry it
                // expects), so a released Lease is taken within one period.
                let written = match elector.decide(seen, started) {
                    Step::WaitUntil(_) => None,
                    Step::Create => {
                        let l = Lease {
                            metadata: ObjectMeta {
                                name: Some(name.clone()),
                                ..ObjectMeta::default()
                            },
                            spec: Some(LeaseSpec {
                                holder_identity: Some(elector.me().to_owned()),
                                lease_duration_seconds: Some(secs),
                                acquire_time: Some(micro_now()),
                                renew_time: Some(micro_now()),
                                lease_transitions: Some(0),
                                ..LeaseSpec::default()
                            }),
                        };
                        let post = PostParams::default();
                        let create = api.create(&post, &l);
                        Some(
                            tokio::time::timeout(bound, create)
                                .await
                                .unwrap_or_else(|_| Err(timed_out()))
                                .map(drop),
                        )
                    }
                    Step::Write => {
                        let mut l = lease.unwrap_or_default();
                        let spec = l.spec.get_or_insert_with(LeaseSpec::default);
                        if spec.holder_identity.as_deref() != Some(elector.me()) {
                            spec.holder_identity = Some(elector.me().to_owned());
                            spec.acquire_time = Some(micro_now());
                            spec.lease_transitions =
                                Some(spec.lease_transitions.unwrap_or(0).saturating_add(1).max(0));
                        }
                        spec.renew_time = Some(micro_now());
                        spec.lease_duration_seconds = Some(secs);
                        let post = PostParams::default();
                        let replace = api.replace(&name, &post, &l);
                        Some(
                            tokio::time::timeout(bound, replace)
                                .await
                                .unwrap_or_else(|_| Err(timed_out()))
                                .map(drop),
                        )
                    }
                };
                match written {
                    Some(Ok(())) => elector.written(started),
                    Some(Err(e)) => {
                        debug!(lease = %name, error = %e, "Lease not written");
                        elector.failed();
                    }
                    None => {}
                }
            }
        }
        let until = elector.leading(Instant::now());
        // Renewals move the deadline silently; only gaining or losing the Lease wakes the
        // assigner.
        lead.send_if_modified(|old| {
            let flipped = old.is_some() != until.is_some();
            *old = until;
            if flipped {
                if until.is_some() {
                    info!(lease = %name, "holding the Lease: assigning addresses");
                } else {
                    info!(lease = %name, "not holding the Lease: standing by");
                }
            }
            flipped
        });
        if let Some(until) = until {
            next = next.min(until);
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(next.into()) => {}
        }
    }
    if elector.leading(Instant::now()).is_some() {
        if tokio::time::timeout(Duration::from_secs(3), release(&api, &name, elector.me()))
            .await
            .is_err()
        {
            warn!(lease = %name, "releasing the Lease timed out");
        }
        elector.released();
        lead.send_replace(None);
    }
}

/// Gives the Lease up on shutdown, so a standby takes over at once.
async fn release(api: &Api<Lease>, name: &str, me: &str) {
    let Ok(Some(mut l)) = api.get_opt(name).await else {
        return;
    };
    let Some(spec) = l.spec.as_mut() else { return };
    if spec.holder_identity.as_deref() != Some(me) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(micro_now());
    match api.replace(name, &PostParams::default(), &l).await {
        Ok(_) => info!(lease = %name, "Lease released"),
        Err(e) => warn!(lease = %name, error = %e, "cannot release the Lease"),
    }
}
