//! Backup ids: when the backup started, UTC, to the millisecond (`20261202-041500-123`), so
//! that ids sort as their times and "latest" is the greatest complete one.

use crate::{Error, Result};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupId(String);

impl BackupId {
    pub fn at(time: jiff::Timestamp) -> Self {
        let millis = time.subsec_millisecond();
        Self(format!("{}-{millis:03}", time.strftime("%Y%m%d-%H%M%S")))
    }

    pub fn now() -> Self {
        Self::at(jiff::Timestamp::now())
    }

    /// An id as a user or a spec gives it: exactly `YYYYMMDD-HHMMSS-mmm` (digits only, so it
    /// can never name a path outside the environment's backups).
    pub fn parse(text: &str) -> Result<Self> {
        let shape: Vec<usize> = text.split('-').map(str::len).collect();
        let digits = text
            .split('-')
            .all(|part| part.bytes().all(|b| b.is_ascii_digit()));
        if shape == [8, 6, 3] && digits {
            Ok(Self(text.to_owned()))
        } else {
            Err(Error::Invalid(format!(
                "backup id {text:?}: must be YYYYMMDD-HHMMSS-mmm (UTC), as `appenv backup list` prints"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_as_their_times_and_parse_back() {
        let t = |s: &str| s.parse::<jiff::Timestamp>().expect("timestamp");
        let a = BackupId::at(t("2026-12-02T04:15:00.123Z"));
        let b = BackupId::at(t("2026-12-02T04:15:00.124Z"));
        let c = BackupId::at(t("2026-12-10T00:00:00Z"));
        assert_eq!(a.as_str(), "20261202-041500-123");
        assert_eq!(c.as_str(), "20261210-000000-000");
        assert!(a < b && b < c);
        assert_eq!(BackupId::parse(a.as_str()).expect("parses"), a);
    }

    #[test]
    fn an_id_that_could_name_a_path_is_refused() {
        for bad in [
            "../20261202-041500-123",
            "20261202-041500",
            "2026120a-041500-123",
            "",
            "20261202-041500-123/x",
        ] {
            let err = BackupId::parse(bad).expect_err(bad).to_string();
            assert!(err.contains("YYYYMMDD-HHMMSS-mmm"), "{err}");
        }
    }
}
