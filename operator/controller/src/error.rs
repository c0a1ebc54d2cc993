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
    pub fn category(&self) -> Category {
        match self {
            Error::Apply { .. } => Category::Apply,
            Error::Prune { .. } => Category::Prune,
            Error::Missing(_) | Error::Watches(_) => Category::Observe,
            Error::Status(_) => Category::Status,
            Error::Password(_) => Category::Password,
            Error::Expire(_) => Category::Expire,
        }
    }
}

/// What kind of failure a reconcile had: the reason of its Warning Event and the `category`
/// label of `appenv_reconcile_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    Apply,
    Prune,
    Observe,
    Status,
    Password,
    Expire,
}

impl Category {
    /// Every category, in declaration order.
    pub const ALL: &'static [Self] = &[
        Self::Apply,
        Self::Prune,
        Self::Observe,
        Self::Status,
        Self::Password,
        Self::Expire,
    ];

    /// The category as Events and metrics show it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Apply => "ApplyFailed",
            Self::Prune => "PruneFailed",
            Self::Observe => "ObserveFailed",
            Self::Status => "StatusFailed",
            Self::Password => "PasswordFailed",
            Self::Expire => "ExpireFailed",
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
