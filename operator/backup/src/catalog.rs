//! The backups of one environment at a destination: `{prefix}/{environment}/{id}/`, each a
//! set of files and a `manifest.json` written last.

use crate::destination::{Destination, S3Credentials};
use crate::id::BackupId;
use crate::manifest::{FileEntry, Manifest};
use crate::{Error, Result};
use futures::TryStreamExt as _;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload, WriteMultipart};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};

const MANIFEST: &str = "manifest.json";
/// A backup without a manifest that started this long ago will never be completed: an agent
/// killed mid-upload, a failed dump. Pruning removes what it left.
pub const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(6 * 3600);
/// Parts uploaded at once; with object_store's 5 MiB parts, the most an upload buffers.
const PARTS_IN_FLIGHT: usize = 4;

#[derive(Debug)]
pub struct Catalog {
    store: Arc<dyn ObjectStore>,
    root: Path,
    location: String,
    environment: String,
}

/// What a prune removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Complete backups past the number to keep, oldest first.
    pub expired: Vec<BackupId>,
    /// Incomplete backups abandoned more than [`ABANDONED_AFTER`] ago.
    pub abandoned: Vec<BackupId>,
}

/// Which backups a prune removes: the complete ones past the newest `keep`, and the incomplete
/// ones that started before `abandoned_before`.
pub fn retention(
    complete: &BTreeSet<BackupId>,
    incomplete: &BTreeSet<BackupId>,
    keep: usize,
    abandoned_before: &BackupId,
) -> Pruned {
    let expired_count = complete.len().saturating_sub(keep.max(1));
    Pruned {
        expired: complete.iter().take(expired_count).cloned().collect(),
        abandoned: incomplete
            .iter()
            .filter(|id| *id < abandoned_before)
            .cloned()
            .collect(),
    }
}

/// An environment's name: a DNS label, so that it is one path segment.
fn check_environment(environment: &str) -> Result<()> {
    let ok = (1..=63).contains(&environment.len())
        && environment
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !environment.starts_with('-')
        && !environment.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "environment {environment:?}: must be a DNS label (lowercase letters, digits, '-')"
        )))
    }
}

impl Catalog {
    pub fn open(
        destination: &Destination,
        credentials: Option<&S3Credentials>,
        environment: &str,
    ) -> Result<Self> {
        check_environment(environment)?;
        let (store, prefix) = destination.open(credentials)?;
        Ok(Self::with_store(
            store,
            &prefix,
            &destination.describe_under(environment),
            environment,
        ))
    }

    /// The catalog of `environment` in `store` under `prefix`; `location` names that place in
    /// messages (no credentials).
    pub fn with_store(
        store: Arc<dyn ObjectStore>,
        prefix: &Path,
        location: &str,
        environment: &str,
    ) -> Self {
        Self {
            store,
            location: location.to_owned(),
            root: prefix.clone().join(environment),
            environment: environment.to_owned(),
        }
    }

    /// Where this environment's backups are, in words (no credentials).
    pub fn location(&self) -> &str {
        &self.location
    }

    pub fn environment(&self) -> &str {
        &self.environment
    }

    fn path(&self, id: &BackupId, name: &str) -> Path {
        self.root.clone().join(id.as_str()).join(name)
    }

    fn store_error(&self) -> impl Fn(object_store::Error) -> Error + '_ {
        |error| Error::Store {
            location: self.location.clone(),
            error,
        }
    }

    /// Every object under the environment's root, grouped by backup id; objects whose first
    /// segment is not an id are left alone (they are not ours).
    async fn objects(&self) -> Result<BTreeMap<BackupId, Vec<Path>>> {
        let objects: Vec<_> = self
            .store
            .list(Some(&self.root))
            .try_collect()
            .await
            .map_err(self.store_error())?;
        let mut by_id: BTreeMap<BackupId, Vec<Path>> = BTreeMap::new();
        for object in objects {
            let Some(relative) = object.location.prefix_match(&self.root) else {
                continue;
            };
            let parts: Vec<_> = relative.collect();
            if let [id, ..] = parts.as_slice()
                && let Ok(id) = BackupId::parse(id.as_ref())
            {
                by_id.entry(id).or_default().push(object.location);
            }
        }
        Ok(by_id)
    }

    fn is_manifest(&self, id: &BackupId, path: &Path) -> bool {
        *path == self.path(id, MANIFEST)
    }

    /// The complete backups, oldest first.
    pub async fn list(&self) -> Result<Vec<Manifest>> {
        let mut manifests = Vec::new();
        for (id, paths) in self.objects().await? {
            if paths.iter().any(|p| self.is_manifest(&id, p)) {
                manifests.push(self.find(&id).await?);
            }
        }
        Ok(manifests)
    }

    /// The newest complete backup.
    pub async fn latest(&self) -> Result<Manifest> {
        let objects = self.objects().await?;
        let newest = objects
            .iter()
            .rev()
            .find(|(id, paths)| paths.iter().any(|p| self.is_manifest(id, p)));
        match newest {
            Some((id, _)) => self.find(id).await,
            None => Err(Error::NoBackup {
                environment: self.environment.clone(),
                location: self.location.clone(),
            }),
        }
    }

    /// A complete backup by id.
    pub async fn find(&self, id: &BackupId) -> Result<Manifest> {
        let bytes = match self.store.get(&self.path(id, MANIFEST)).await {
            Ok(found) => found.bytes().await.map_err(self.store_error())?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::NotFound {
                    id: id.to_string(),
                    location: self.location.clone(),
                });
            }
            Err(other) => return Err(self.store_error()(other)),
        };
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Failed(format!(
                "backup {id} in {}: unreadable manifest: {e}",
                self.location
            ))
        })?;
        if manifest.format > Manifest::FORMAT {
            return Err(Error::Failed(format!(
                "backup {id} in {}: manifest format {} is newer than this agent's {}: use a newer appenv",
                self.location,
                manifest.format,
                Manifest::FORMAT
            )));
        }
        Ok(manifest)
    }

    /// Start uploading one file of backup `id`; nothing is visible before [`Catalog::commit`].
    pub async fn upload(&self, id: &BackupId, name: &str) -> Result<Upload> {
        let upload = self
            .store
            .put_multipart(&self.path(id, name))
            .await
            .map_err(self.store_error())?;
        Ok(Upload {
            writer: WriteMultipart::new(upload),
            hasher: Sha256::new(),
            size: 0,
            name: name.to_owned(),
            location: self.location.clone(),
        })
    }

    /// Upload a whole local file as `name` of backup `id`.
    pub async fn upload_file(
        &self,
        id: &BackupId,
        name: &str,
        file: &std::path::Path,
    ) -> Result<FileEntry> {
        let mut reader = tokio::fs::File::open(file)
            .await
            .map_err(Error::io(format!("opening {}", file.display())))?;
        let mut upload = self.upload(id, name).await?;
        match upload.copy_from(&mut reader).await {
            Ok(()) => upload.finish().await,
            Err(e) => {
                upload.abort().await;
                Err(e)
            }
        }
    }

    /// Make backup `id` exist: its manifest, written once every file is complete.
    pub async fn commit(&self, manifest: &Manifest) -> Result<()> {
        let id = BackupId::parse(&manifest.id)?;
        let json = serde_json::to_vec_pretty(manifest)
            .map_err(|e| Error::Failed(format!("manifest of backup {id}: {e}")))?;
        self.store
            .put(&self.path(&id, MANIFEST), PutPayload::from(json))
            .await
            .map_err(self.store_error())?;
        Ok(())
    }

    /// Download file `name` of a backup to `to`, checking its size and checksum against the
    /// manifest; a damaged copy is deleted and reported.
    pub async fn download(
        &self,
        manifest: &Manifest,
        name: &str,
        to: &std::path::Path,
    ) -> Result<()> {
        let id = BackupId::parse(&manifest.id)?;
        let expected = manifest.file(name).ok_or_else(|| {
            Error::Failed(format!("backup {id} has no file {name} in its manifest"))
        })?;
        let mut stream = self
            .store
            .get(&self.path(&id, name))
            .await
            .map_err(self.store_error())?
            .into_stream();
        let mut file = tokio::fs::File::create(to)
            .await
            .map_err(Error::io(format!("creating {}", to.display())))?;
        let (mut hasher, mut size) = (Sha256::new(), 0u64);
        while let Some(chunk) = stream.try_next().await.map_err(self.store_error())? {
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .map_err(Error::io(format!("writing {}", to.display())))?;
        }
        file.sync_all()
            .await
            .map_err(Error::io(format!("writing {}", to.display())))?;
        let sha256 = hex(&hasher.finalize());
        if size != expected.size_bytes || sha256 != expected.sha256 {
            let _ = tokio::fs::remove_file(to).await;
            return Err(Error::Failed(format!(
                "backup {id}, file {name}: {size} bytes with SHA-256 {sha256}, but the manifest \
                 says {} bytes with {}: the backup is damaged",
                expected.size_bytes, expected.sha256
            )));
        }
        Ok(())
    }

    /// Delete backup `id`: its manifest first (it stops existing), then its files.
    async fn delete(&self, id: &BackupId, paths: &[Path]) -> Result<()> {
        let (manifests, files): (Vec<&Path>, Vec<&Path>) =
            paths.iter().partition(|p| self.is_manifest(id, p));
        for path in manifests.into_iter().chain(files) {
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(other) => return Err(self.store_error()(other)),
            }
        }
        Ok(())
    }

    /// Keep the newest `keep` complete backups; remove older ones and abandoned attempts.
    pub async fn prune(&self, keep: usize, now: jiff::Timestamp) -> Result<Pruned> {
        let objects = self.objects().await?;
        let (complete, incomplete): (BTreeSet<BackupId>, BTreeSet<BackupId>) = {
            let (c, i): (Vec<_>, Vec<_>) = objects
                .iter()
                .partition(|(id, paths)| paths.iter().any(|p| self.is_manifest(id, p)));
            (
                c.into_iter().map(|(id, _)| id.clone()).collect(),
                i.into_iter().map(|(id, _)| id.clone()).collect(),
            )
        };
        let abandoned_before = now
            .checked_sub(jiff::SignedDuration::try_from(ABANDONED_AFTER).unwrap_or_default())
            .unwrap_or(now);
        let pruned = retention(
            &complete,
            &incomplete,
            keep,
            &BackupId::at(abandoned_before),
        );
        for id in pruned.expired.iter().chain(&pruned.abandoned) {
            self.delete(id, &objects[id]).await?;
        }
        Ok(pruned)
    }
}

/// One file being uploaded: streamed in parts, checksummed on the way.
pub struct Upload {
    writer: WriteMultipart,
    hasher: Sha256,
    size: u64,
    name: String,
    location: String,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("name", &self.name)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Upload {
    pub async fn copy_from(&mut self, reader: &mut (impl AsyncRead + Unpin)) -> Result<()> {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(Error::io(format!("reading the data of {}", self.name)))?;
            if n == 0 {
                return Ok(());
            }
            self.writer
                .wait_for_capacity(PARTS_IN_FLIGHT)
                .await
                .map_err(|error| Error::Store {
                    location: self.location.clone(),
                    error,
                })?;
            self.hasher.update(&buf[..n]);
            self.writer.write(&buf[..n]);
            self.size += n as u64;
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Complete the upload; the file exists under its name, its backup not yet.
    pub async fn finish(self) -> Result<FileEntry> {
        let Self {
            writer,
            hasher,
            size,
            name,
            location,
        } = self;
        writer
            .finish()
            .await
            .map_err(|error| Error::Store { location, error })?;
        Ok(FileEntry {
            name,
            size_bytes: size,
            sha256: hex(&hasher.finalize()),
        })
    }

    /// Give the upload up: nothing of it remains (an S3 multipart upload is aborted).
    pub async fn abort(self) {
        if let Err(e) = self.writer.abort().await {
            tracing::warn!(file = %self.name, error = %e, "aborting an upload");
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> BTreeSet<BackupId> {
        list.iter()
            .map(|s| BackupId::parse(s).expect("id"))
            .collect()
    }

    #[test]
    fn retention_keeps_the_newest_and_drops_abandoned_attempts() {
        let complete = ids(&[
            "20261201-000000-000",
            "20261202-000000-000",
            "20261203-000000-000",
        ]);
        let incomplete = ids(&["20261201-120000-000", "20261203-120000-000"]);
        let before = BackupId::parse("20261203-060000-000").expect("id");
        let pruned = retention(&complete, &incomplete, 2, &before);
        assert_eq!(
            pruned.expired,
            ids(&["20261201-000000-000"])
                .into_iter()
                .collect::<Vec<_>>()
        );
        // The newer attempt may still be running: it stays.
        assert_eq!(
            pruned.abandoned,
            ids(&["20261201-120000-000"])
                .into_iter()
                .collect::<Vec<_>>()
        );
        // keep is at least one: the only backup is never removed.
        assert!(
            retention(&complete, &BTreeSet::new(), 0, &before)
                .expired
                .len()
                == 2
        );
        assert!(
            retention(&complete, &BTreeSet::new(), 5, &before)
                .expired
                .is_empty()
        );
    }

    #[test]
    fn environments_are_one_path_segment() {
        for bad in ["", "../prod", "a/b", "Prod", "-x"] {
            assert!(check_environment(bad).is_err(), "{bad}");
        }
        check_environment("pr-42").expect("valid");
    }

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
