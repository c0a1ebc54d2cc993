//! appenv-backup: the backup agent that runs inside appenv's backup and restore Jobs
//! (`appenv agent`), and the catalog of backups it writes.
//!
//! A backup is one or more files and a manifest, under
//! `{prefix}/{environment}/{id}/` of a destination (an S3-compatible bucket, or a directory on a
//! volume). The files are uploaded first, each checksummed as it streams; the manifest is
//! written last and only once every file is complete: a backup without a manifest (an agent
//! killed mid-upload, a failed `pg_dump`) is never listed, never "latest", never counted for
//! retention, and the next prune removes what it left.
//!
//! Per engine, the copy is consistent:
//! - PostgreSQL: `pg_dump --format=custom` (one snapshot, online), run with the server's own
//!   `pg_dump`; restored with `pg_restore` in a single transaction;
//! - SQLite: SQLite's online backup API in one step (a read snapshot; writers go on in WAL
//!   mode), checked with `PRAGMA integrity_check` before it is uploaded;
//! - DuckDB: the file and its WAL, copied while no process has it open (appenv stops the web
//!   component first; the agent refuses a file another process holds).

#![forbid(unsafe_code)]

pub mod catalog;
pub mod destination;
pub mod dump;
pub mod engine;
pub mod id;
pub mod manifest;

pub use catalog::{Catalog, Pruned};
pub use destination::Destination;
pub use dump::Dump;
pub use engine::{Engine, Origin, Restore, Source};
pub use id::BackupId;
pub use manifest::{FileEntry, Manifest, Reason};

/// What the agent can fail with. Every message names the object or input it is about, and
/// none carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    #[error("backup {id} does not exist in {location}")]
    NotFound { id: String, location: String },
    #[error("no complete backup of environment {environment} in {location}")]
    NoBackup {
        environment: String,
        location: String,
    },
    /// Only the root cause is shown: object_store's own message repeats every level of its
    /// chain (request, retries, HTTP, connection) in one line.
    #[error("{location}: {}", root_cause(error))]
    Store {
        location: String,
        error: object_store::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sqlite {
        what: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{0}")]
    Failed(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The innermost error of a chain, e.g. "tcp connect error: Connection refused (os error 111)".
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    s3_error(&cause.to_string())
}

/// An S3 error answer (`... 404 Not Found: <?xml ...><Code>NoSuchBucket</Code><Message>The
/// specified bucket does not exist</Message>...`) as its status, code and message only.
fn s3_error(text: &str) -> String {
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let len = text[start..].find(&format!("</{name}>"))?;
        Some(&text[start..start + len])
    };
    match (
        text.find("<?xml").or_else(|| text.find("<Error>")),
        tag("Code"),
    ) {
        (Some(xml), Some(code)) => {
            let status = text[..xml].trim_end().trim_end_matches(':');
            let message = tag("Message").unwrap_or_default();
            format!("{status}: {code}: {message}")
        }
        _ => text.to_owned(),
    }
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    pub(crate) fn sqlite(what: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> Error {
        let what = what.into();
        move |source| Error::Sqlite { what, source }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn s3_error_answers_are_shortened_to_code_and_message() {
        let answer = "Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?>\n<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><RequestId>x</RequestId></Error>";
        assert_eq!(
            super::s3_error(answer),
            "Server returned non-2xx status code: 404 Not Found: NoSuchBucket: The specified bucket does not exist"
        );
        assert_eq!(super::s3_error("Connection refused"), "Connection refused");
    }
}
