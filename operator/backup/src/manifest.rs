//! The manifest of a backup: written last, it is what makes a backup exist.

use crate::engine::Engine;
use serde::{Deserialize, Serialize};

/// Why a backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    Scheduled,
    Manual,
    BeforeMigration,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Manual => "manual",
            Self::BeforeMigration => "before-migration",
        }
    }
}

/// One file of a backup, as it was uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    pub name: String,
    pub size_bytes: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The manifest's format; readers refuse a newer one.
    pub format: u32,
    pub id: String,
    pub environment: String,
    pub engine: Engine,
    pub reason: Reason,
    /// RFC 3339, UTC.
    pub started: String,
    pub finished: String,
    pub duration_seconds: f64,
    /// All files together.
    pub size_bytes: u64,
    pub files: Vec<FileEntry>,
    /// What made the copy, e.g. "pg_dump (PostgreSQL) 15.18" or "SQLite 3.50.2".
    pub tool: String,
}

impl Manifest {
    pub const FORMAT: u32 = 1;

    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }
}
