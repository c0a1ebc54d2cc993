//! Where backups go: an S3-compatible bucket (`s3://bucket/prefix`) or a directory on a volume
//! (`file:///backups/prefix` or an absolute path).

use crate::{Error, Result};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    S3 {
        bucket: String,
        prefix: String,
        /// e.g. `https://s3.eu-central-1.amazonaws.com` or `http://127.0.0.1:9000`; the SDK's
        /// default (AWS) when absent.
        endpoint: Option<String>,
        region: Option<String>,
    },
    Directory {
        path: std::path::PathBuf,
    },
}

/// Credentials of an S3 destination; never printed.
#[derive(Clone, Default)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &"<redacted>")
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

impl S3Credentials {
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, as the Job gets them from the
    /// credentials Secret; `None` when neither is set (an instance role, say).
    pub fn from_env() -> Result<Option<Self>> {
        let read = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match (read("AWS_ACCESS_KEY_ID"), read("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Some(Self {
                access_key_id,
                secret_access_key,
            })),
            (None, None) => Ok(None),
            _ => Err(Error::Invalid(
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: both or neither must be set".into(),
            )),
        }
    }
}

impl Destination {
    /// `s3://bucket/prefix`, `file:///absolute/dir` or `/absolute/dir`.
    pub fn parse(url: &str, endpoint: Option<&str>, region: Option<&str>) -> Result<Self> {
        let invalid = |why: &str| Error::Invalid(format!("destination {url:?}: {why}"));
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let bucket_ok = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !bucket_ok {
                return Err(invalid(
                    "the bucket must be 3 to 63 lowercase letters, digits, '-' or '.'",
                ));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|part| part == ".." || part == ".") {
                return Err(invalid("the prefix may not contain '.' or '..' segments"));
            }
            if let Some(endpoint) = endpoint
                && !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
            {
                return Err(Error::Invalid(format!(
                    "endpoint {endpoint:?}: must start with https:// or http://"
                )));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
                endpoint: endpoint.map(str::to_owned),
                region: region.map(str::to_owned),
            });
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        let path = std::path::Path::new(path);
        if !path.is_absolute() {
            return Err(invalid(
                "must be s3://bucket/prefix or an absolute directory",
            ));
        }
        if path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(invalid("the directory may not contain '..'"));
        }
        Ok(Self::Directory {
            path: path.to_owned(),
        })
    }

    /// The destination in words, without credentials: `s3://bucket/prefix at ENDPOINT`.
    pub fn describe(&self) -> String {
        self.describe_under("")
    }

    /// A folder `under` the destination, in words: `s3://bucket/prefix/under at ENDPOINT`.
    pub fn describe_under(&self, under: &str) -> String {
        let join = |base: String| match under {
            "" => base,
            _ => format!("{}/{under}", base.trim_end_matches('/')),
        };
        match self {
            Self::S3 {
                bucket,
                prefix,
                endpoint,
                ..
            } => {
                let url = join(format!("s3://{bucket}/{prefix}"));
                match endpoint {
                    Some(endpoint) => format!("{url} at {endpoint}"),
                    None => url,
                }
            }
            Self::Directory { path } => join(path.display().to_string()),
        }
    }

    /// The store and the prefix under it.
    pub fn open(
        &self,
        credentials: Option<&S3Credentials>,
    ) -> Result<(Arc<dyn ObjectStore>, Path)> {
        let location = self.describe();
        let store_error = |error| Error::Store {
            location: location.clone(),
            error,
        };
        match self {
            Self::S3 {
                bucket,
                prefix,
                endpoint,
                region,
            } => {
                // Few, short retries: an unreachable endpoint is reported in seconds, not after
                // object_store's default of ten retries over three minutes.
                let retry = object_store::RetryConfig {
                    max_retries: 2,
                    retry_timeout: Duration::from_secs(20),
                    ..object_store::RetryConfig::default()
                };
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(region.as_deref().unwrap_or("us-east-1"))
                    .with_retry(retry)
                    .with_client_options(
                        object_store::ClientOptions::new()
                            .with_connect_timeout(Duration::from_secs(5))
                            .with_timeout(Duration::from_secs(300)),
                    );
                if let Some(endpoint) = endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                if let Some(credentials) = credentials {
                    builder = builder
                        .with_access_key_id(&credentials.access_key_id)
                        .with_secret_access_key(&credentials.secret_access_key);
                }
                let store = builder.build().map_err(store_error)?;
                Ok((Arc::new(store), Path::from(prefix.as_str())))
            }
            Self::Directory { path } => {
                std::fs::create_dir_all(path).map_err(Error::io(format!(
                    "creating the backup directory {}",
                    path.display()
                )))?;
                let store = LocalFileSystem::new_with_prefix(path).map_err(store_error)?;
                Ok((Arc::new(store), Path::default()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_and_name_what_is_wrong() {
        assert_eq!(
            Destination::parse(
                "s3://shop-backups/prod/",
                Some("http://127.0.0.1:9000"),
                None
            )
            .expect("valid"),
            Destination::S3 {
                bucket: "shop-backups".into(),
                prefix: "prod".into(),
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: None,
            }
        );
        assert_eq!(
            Destination::parse("file:///backups/shop", None, None).expect("valid"),
            Destination::Directory {
                path: "/backups/shop".into()
            }
        );
        for (bad, why) in [
            ("s3://Shop_Backups/x", "the bucket must be"),
            ("s3://ab", "the bucket must be"),
            ("s3://bucket/../other", "'.' or '..'"),
            ("backups", "an absolute directory"),
            ("/backups/../etc", "'..'"),
        ] {
            let err = Destination::parse(bad, None, None)
                .expect_err(bad)
                .to_string();
            assert!(err.contains(why) && err.contains(bad), "{bad}: {err}");
        }
        let s3 =
            Destination::parse("s3://b-1/x", Some("http://127.0.0.1:9000"), None).expect("valid");
        assert_eq!(
            s3.describe_under("app"),
            "s3://b-1/x/app at http://127.0.0.1:9000"
        );
        let dir = Destination::parse("/backups/", None, None).expect("valid");
        assert_eq!(dir.describe_under("app"), "/backups/app");
        let err = Destination::parse("s3://bucket/x", Some("ftp://x"), None)
            .expect_err("scheme")
            .to_string();
        assert!(err.contains("endpoint \"ftp://x\""), "{err}");
    }

    #[test]
    fn credentials_are_never_printed() {
        let c = S3Credentials {
            access_key_id: "AKIAEXAMPLE".into(),
            secret_access_key: "s3cr3t".into(),
        };
        let printed = format!("{c:?}");
        assert!(
            !printed.contains("AKIAEXAMPLE") && !printed.contains("s3cr3t"),
            "{printed}"
        );
    }
}
