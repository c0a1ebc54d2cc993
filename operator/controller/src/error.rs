//! Errors of a reconcile, each with a static category: the reason of its Warning Event and the
//! label of the error metric. Messages carry the cause chain but never a secret value.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("applying {kind} {name}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting {kind} {name} (no longer part of the environment)")]
    Prune {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0} does not exist")]
    Missing(String),
    #[error("waiting for the watches' first lists")]
    Watches(#[source] crate::stores::NotReady),
    #[error("writing the status")]
    Status(#[source] kube::Error),
    #[error("generating the database password")]
    Password(#[source] getrandom::Error),
    #[error("deleting the expired preview")]
    Expire(#[source] kube::Error),
}

impl Error {
    /// A stable, low-cardinality name for Events and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Apply { .. } => "ApplyFailed",
            Error::Prune { .. } => "PruneFailed",
            Error::Missing(_) | Error::Watches(_) => "ObserveFailed",
            Error::Status(_) => "StatusFailed",
            Error::Password(_) => "PasswordFailed",
            Error::Expire(_) => "ExpireFailed",
        }
    }
}

/// `error: cause: cause` on one line.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
