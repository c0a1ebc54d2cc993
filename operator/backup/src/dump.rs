//! A dump at a URL (`spec.database.restore.fromUrl`, `appenv agent restore --url`): for
//! PostgreSQL a `pg_dump --format=custom` archive, for SQLite and DuckDB the database file. It
//! is downloaded whole to a local file, its SHA-256 computed as it streams, and checked (the
//! checksum given, then the engine's own format) before anything in the database changes.
//!
//! The URL may carry credentials in its query (a presigned S3 URL): messages show it without
//! query, fragment or user information ([`Dump::shown`]), and errors of the HTTP client are
//! stripped of it.

use crate::catalog::hex;
use crate::{Error, Result};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How long the server may take to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a download may pause without a byte before it is given up.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
enum Location {
    Http(reqwest::Url),
    File(PathBuf),
}

/// A dump to restore from, and the checksum it must have.
#[derive(Debug, Clone)]
pub struct Dump {
    location: Location,
    sha256: Option<String>,
}

/// What a download wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub size_bytes: u64,
    pub sha256: String,
}

impl Dump {
    /// `https://...`, `http://...`, `file:///path` or an absolute path, and the SHA-256 it must
    /// have (64 hex digits), if known.
    pub fn parse(url: &str, sha256: Option<&str>) -> Result<Self> {
        let sha256 = sha256.map(str::to_ascii_lowercase);
        if let Some(sha) = &sha256
            && (sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(Error::Invalid(format!(
                "--sha256 {sha:?}: must be 64 hexadecimal digits, as `sha256sum` prints them"
            )));
        }
        let location = if url.starts_with('/') {
            Location::File(PathBuf::from(url))
        } else {
            // Not echoed: a URL that does not parse cannot be stripped of its credentials.
            let parsed = reqwest::Url::parse(url).map_err(|e| {
                Error::Invalid(format!(
                    "the dump URL does not parse ({e}): give https://host/path, file:///path or an absolute path"
                ))
            })?;
            match parsed.scheme() {
                "https" | "http" if parsed.host_str().is_some_and(|h| !h.is_empty()) => {
                    Location::Http(parsed)
                }
                "file" => Location::File(PathBuf::from(parsed.path())),
                _ => {
                    return Err(Error::Invalid(format!(
                        "the dump URL {}: must be https://, http://, file:// or an absolute path",
                        bare(&parsed)
                    )));
                }
            }
        };
        Ok(Self { location, sha256 })
    }

    /// The URL as messages show it: no user information, query or fragment.
    pub fn shown(&self) -> String {
        match &self.location {
            Location::Http(url) => bare(url),
            Location::File(path) => path.display().to_string(),
        }
    }

    /// The file `<dump><suffix>` beside a local dump, if it exists: the WAL that a snapshot of
    /// the volume holds beside the database file. A download has none.
    pub fn beside(&self, suffix: &str) -> Option<PathBuf> {
        let Location::File(path) = &self.location else {
            return None;
        };
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let beside = PathBuf::from(name);
        beside.is_file().then_some(beside)
    }

    /// Copy the file [`beside`](Self::beside) the dump to `to` (nothing is left there if it
    /// fails).
    pub async fn fetch_beside(&self, suffix: &str, to: &Path) -> Result<Fetched> {
        let from = self
            .beside(suffix)
            .ok_or_else(|| Error::Failed(format!("{}{suffix}: no such file", self.shown())))?;
        let copied = copy(&from, to).await;
        if copied.is_err() {
            let _ = tokio::fs::remove_file(to).await;
        }
        copied
    }

    /// The checksum it must have, if one was given.
    pub fn sha256(&self) -> Option<&str> {
        self.sha256.as_deref()
    }

    /// Download the dump to `to` (created), checking the checksum if one was given; on any
    /// failure nothing is left at `to`.
    pub async fn fetch(&self, to: &Path) -> Result<Fetched> {
        let fetched = match &self.location {
            Location::Http(url) => self.download(url, to).await,
            Location::File(path) => copy(path, to).await,
        };
        let checked = fetched.and_then(|f| match &self.sha256 {
            Some(want) if *want != f.sha256 => Err(Error::Failed(format!(
                "the dump at {} has SHA-256 {} ({} bytes), not the {want} it must have: it was \
                 not restored",
                self.shown(),
                f.sha256,
                f.size_bytes
            ))),
            _ => Ok(f),
        });
        if checked.is_err() {
            let _ = tokio::fs::remove_file(to).await;
        }
        checked
    }

    async fn download(&self, url: &reqwest::Url, to: &Path) -> Result<Fetched> {
        let failed = |e: reqwest::Error| {
            Error::Failed(format!(
                "downloading the dump at {}: {}",
                self.shown(),
                crate::root_cause(&e.without_url())
            ))
        };
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(failed)?;
        let mut response = client.get(url.clone()).send().await.map_err(failed)?;
        let status = response.status();
        if !status.is_success() {
            return Err(Error::Failed(format!(
                "downloading the dump at {}: the server answered {status}",
                self.shown()
            )));
        }
        let mut writer = Writer::create(to).await?;
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            writer.write(&chunk).await?;
        }
        writer.finish().await
    }
}

/// A file being written and hashed.
struct Writer<'a> {
    path: &'a Path,
    file: tokio::fs::File,
    hasher: Sha256,
    size: u64,
}

impl<'a> Writer<'a> {
    async fn create(path: &'a Path) -> Result<Self> {
        let file = tokio::fs::File::create(path)
            .await
            .map_err(Error::io(format!("creating {}", path.display())))?;
        Ok(Self {
            path,
            file,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        self.file
            .write_all(chunk)
            .await
            .map_err(Error::io(format!("writing {}", self.path.display())))
    }

    async fn finish(self) -> Result<Fetched> {
        self.file
            .sync_all()
            .await
            .map_err(Error::io(format!("writing {}", self.path.display())))?;
        Ok(Fetched {
            size_bytes: self.size,
            sha256: hex(&self.hasher.finalize()),
        })
    }
}

async fn copy(from: &Path, to: &Path) -> Result<Fetched> {
    let mut source = tokio::fs::File::open(from)
        .await
        .map_err(Error::io(format!("opening the dump {}", from.display())))?;
    let mut writer = Writer::create(to).await?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = source
            .read(&mut buffer)
            .await
            .map_err(Error::io(format!("reading the dump {}", from.display())))?;
        if n == 0 {
            break;
        }
        writer.write(&buffer[..n]).await?;
    }
    writer.finish().await
}

/// A URL without user information, query or fragment.
fn bare(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// The first bytes of a file, to check its format.
pub(crate) async fn head(path: &Path, len: usize) -> Result<Vec<u8>> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(Error::io(format!("opening {}", path.display())))?;
    let mut bytes = vec![0u8; len];
    let mut read = 0;
    while read < len {
        let n = file
            .read(&mut bytes[read..])
            .await
            .map_err(Error::io(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        read += n;
    }
    bytes.truncate(read);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials_query_or_fragment() {
        let dump = Dump::parse(
            "https://user:pw@dumps.example:8443/a/b.dump?X-Amz-Signature=secret#frag",
            None,
        )
        .expect("valid");
        assert_eq!(dump.shown(), "https://dumps.example:8443/a/b.dump");
        let file = Dump::parse("file:///backups/b.dump", None).expect("valid");
        assert_eq!(file.shown(), "/backups/b.dump");
        assert_eq!(
            Dump::parse("/backups/b.dump", None).expect("valid").shown(),
            "/backups/b.dump"
        );
    }

    #[test]
    fn bad_urls_and_checksums_are_named() {
        for (url, sha, want) in [
            (
                "ftp://h/x",
                None,
                "must be https://, http://, file:// or an absolute path",
            ),
            (
                "relative/path",
                None,
                "does not parse (relative URL without a base)",
            ),
            (
                "https://h/x",
                Some("abc"),
                "--sha256 \"abc\": must be 64 hexadecimal digits",
            ),
        ] {
            let err = Dump::parse(url, sha).expect_err(url).to_string();
            assert!(err.contains(want), "{url}: {err}");
        }
        let sha = "AB".repeat(32);
        let dump = Dump::parse("https://h/x", Some(&sha)).expect("valid");
        assert_eq!(dump.sha256(), Some("ab".repeat(32).as_str()));
    }

    #[tokio::test]
    async fn a_file_dump_is_copied_and_a_wrong_checksum_leaves_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let source = dir.path().join("dump");
        std::fs::write(&source, b"hello").expect("write");
        let sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        let to = dir.path().join("copy");
        let dump = Dump::parse(source.to_str().expect("utf-8"), Some(sha)).expect("valid");
        let fetched = dump.fetch(&to).await.expect("copied");
        assert_eq!((fetched.size_bytes, fetched.sha256.as_str()), (5, sha));
        assert_eq!(std::fs::read(&to).expect("copy"), b"hello");
        std::fs::remove_file(&to).expect("remove");
        let wrong =
            Dump::parse(source.to_str().expect("utf-8"), Some(&"0".repeat(64))).expect("valid");
        let err = wrong
            .fetch(&to)
            .await
            .expect_err("wrong checksum")
            .to_string();
        assert!(
            err.contains(&format!(
                "has SHA-256 {sha} (5 bytes), not the {}",
                "0".repeat(64)
            )),
            "{err}"
        );
        assert!(!to.exists(), "nothing is left behind");
        assert_eq!(head(&source, 3).await.expect("head"), b"hel");
        assert_eq!(head(&source, 10).await.expect("head"), b"hello");
    }
}
