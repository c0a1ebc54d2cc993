//! Leader election with a coordination.k8s.io/v1 Lease, so that several operator replicas are
//! safe: only the holder of the Lease reconciles.
//!
//! The algorithm is client-go's: a candidate takes the Lease when it does not exist, when its
//! holder released it, or when the holder has not renewed it for the lease duration, measured
//! on the candidate's own clock from the moment it first saw the current record (so clock
//! skew between nodes does not matter). Every write carries the resourceVersion it read, so
//! two candidates can never both take it. The holder renews every retry period and gives up
//! when it could not renew for the renew deadline, which is shorter than the lease duration:
//! it stops before anyone else may start.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Which Lease, who we are, and the timings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per process (the Pod name, or host and pid).
    pub identity: String,
    /// How long a Lease stays valid after its last renewal.
    pub lease_duration: Duration,
    /// The holder gives up when it could not renew for this long (less than the duration).
    pub renew_deadline: Duration,
    /// How often candidates try to take the Lease and the holder renews it.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// The timings must leave the holder time to stop before another candidate may start.
    pub fn check(&self) -> Result<(), String> {
        if self.lease_duration <= self.renew_deadline {
            return Err(format!(
                "lease duration ({:?}) must be longer than the renew deadline ({:?})",
                self.lease_duration, self.renew_deadline
            ));
        }
        if self.renew_deadline <= self.retry_period {
            return Err(format!(
                "renew deadline ({:?}) must be longer than the retry period ({:?})",
                self.renew_deadline, self.retry_period
            ));
        }
        if self.lease_duration.as_secs() < 1 {
            return Err("lease duration must be at least 1s".to_owned());
        }
        Ok(())
    }
}

/// Why a holder stopped leading.
#[derive(Debug, thiserror::Error)]
pub enum Lost {
    #[error("lease {lease} is now held by {holder}")]
    TakenBy { lease: String, holder: String },
    #[error("could not renew lease {lease} for {deadline:?}: {reason}")]
    NotRenewed {
        lease: String,
        deadline: Duration,
        reason: String,
    },
}

/// The outcome of one attempt to take or renew the Lease.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Held,
    HeldBy(String),
    /// Somebody wrote the Lease between our read and our write: read again.
    Conflict,
}

/// What identifies one renewal of a Lease: its holder and renew time.
type Record = (String, Option<Timestamp>);

/// One candidate for one Lease.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The last record seen and when we first saw it.
    observed: Mutex<Option<(Record, Instant)>>,
}

fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX)
}

impl Elector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: Mutex::new(None),
        }
    }

    fn lease_name(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    /// When this record was first seen (now, if it differs from the last one seen).
    fn first_seen(&self, record: Record) -> Instant {
        let Ok(mut observed) = self.observed.lock() else {
            return Instant::now();
        };
        match &*observed {
            Some((seen, at)) if *seen == record => *at,
            _ => {
                let now = Instant::now();
                *observed = Some((record, now));
                now
            }
        }
    }

    async fn attempt(&self) -> Result<Attempt, kube::Error> {
        let me = &self.config.identity;
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.clone()),
                    lease_duration_seconds: Some(seconds(self.config.lease_duration)),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Conflict),
                Err(err) => Err(err),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let first_seen = self.first_seen((holder.clone(), spec.renew_time.as_ref().map(|t| t.0)));
        let ours = holder == *me;
        let valid_for = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.config.lease_duration, Duration::from_secs);
        if !ours && !holder.is_empty() && first_seen.elapsed() < valid_for {
            return Ok(Attempt::HeldBy(holder));
        }
        let mut renewed = LeaseSpec {
            holder_identity: Some(me.clone()),
            lease_duration_seconds: Some(seconds(self.config.lease_duration)),
            renew_time: Some(now.clone()),
            ..spec.clone()
        };
        if !ours {
            renewed.acquire_time = Some(now);
            renewed.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        lease.spec = Some(renewed);
        // `lease` carries the resourceVersion read above: a concurrent write makes this fail.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Held),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Conflict),
            Err(err) => Err(err),
        }
    }

    /// Wait until this candidate holds the Lease.
    pub async fn acquire(&self) {
        self.acquire_until(std::future::pending()).await;
    }

    /// Wait until this candidate holds the Lease (true) or `stop` completes (false). `stop` is
    /// looked at only between attempts, never during one: an attempt whose write reached the
    /// API server is always seen to its end, so a caller that stops knows whether it holds the
    /// Lease (and can release it) instead of leaving a Lease it took without knowing.
    pub async fn acquire_until(&self, stop: impl std::future::Future<Output = ()>) -> bool {
        let mut stop = std::pin::pin!(stop);
        let mut last_holder = String::new();
        loop {
            match self.attempt().await {
                Ok(Attempt::Held) => {
                    tracing::info!(lease = %self.lease_name(), identity = %self.config.identity, "leading");
                    return true;
                }
                Ok(Attempt::HeldBy(holder)) => {
                    if holder != last_holder {
                        tracing::info!(lease = %self.lease_name(), %holder, "standing by: another replica leads");
                        last_holder = holder;
                    }
                }
                Ok(Attempt::Conflict) => {}
                Err(err) => {
                    tracing::warn!(lease = %self.lease_name(), error = %err, "could not read or take the lease");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.retry_period) => {}
                () = &mut stop => return false,
            }
        }
    }

    /// Renew the Lease until that fails; returns why leadership ended.
    pub async fn hold(&self) -> Lost {
        let mut renewed_at = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let reason = match tokio::time::timeout(self.config.retry_period, self.attempt()).await
            {
                Ok(Ok(Attempt::Held)) => {
                    renewed_at = Instant::now();
                    continue;
                }
                Ok(Ok(Attempt::HeldBy(holder))) => {
                    return Lost::TakenBy {
                        lease: self.lease_name(),
                        holder,
                    };
                }
                Ok(Ok(Attempt::Conflict)) => "conflicting write".to_owned(),
                Ok(Err(err)) => err.to_string(),
                Err(_) => format!("no answer within {:?}", self.config.retry_period),
            };
            tracing::warn!(lease = %self.lease_name(), %reason, "could not renew the lease");
            if renewed_at.elapsed() >= self.config.renew_deadline {
                return Lost::NotRenewed {
                    lease: self.lease_name(),
                    deadline: self.config.renew_deadline,
                    reason,
                };
            }
        }
    }

    /// Give the Lease up (on shutdown), so that a standby takes over at once instead of after
    /// the lease duration. Only a Lease we still hold is touched. A renewal that was on the wire
    /// when the renewals stopped may land between our read and our write: that conflict is
    /// retried on a fresh read.
    pub async fn release(&self) -> Result<(), kube::Error> {
        const ATTEMPTS: usize = 3;
        let mut attempt = 1;
        loop {
            match self.release_once().await {
                Err(kube::Error::Api(status)) if status.code == 409 && attempt < ATTEMPTS => {
                    attempt += 1;
                }
                Ok(true) => {
                    tracing::info!(lease = %self.lease_name(), "released the lease");
                    return Ok(());
                }
                other => return other.map(|_| ()),
            }
        }
    }

    /// One read-and-write of [`Elector::release`]; whether the Lease was ours to release.
    async fn release_once(&self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(false);
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(false);
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(duration: u64, deadline: u64, retry: u64) -> LeaseConfig {
        LeaseConfig {
            namespace: "ns".into(),
            name: "lease".into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs(duration),
            renew_deadline: Duration::from_secs(deadline),
            retry_period: Duration::from_secs(retry),
        }
    }

    #[test]
    fn timings_leave_the_holder_time_to_stop() {
        assert!(config(15, 10, 2).check().is_ok());
        let err = config(10, 10, 2).check().expect_err("deadline = duration");
        assert!(err.contains("renew deadline"), "{err}");
        let err = config(15, 2, 2).check().expect_err("retry = deadline");
        assert!(err.contains("retry period"), "{err}");
    }
}
