//! Reading AppEnvironment files: YAML (one or more documents), strictly. Unknown fields are
//! errors here, where a person can fix them; the API server would silently drop them.

use crate::api::{AppEnvironment, GROUP};
use crate::validate::FieldError;
use kube::Resource as _;
use serde::Deserialize as _;

/// A document that could not be read, with every problem found in it.
#[derive(Debug)]
pub struct ReadError {
    /// 1-based document number within the file.
    pub document: usize,
    pub errors: Vec<FieldError>,
}

/// Parse every YAML document of `text` as an AppEnvironment. Empty documents are skipped.
pub fn parse(text: &str) -> Vec<Result<AppEnvironment, ReadError>> {
    parse_numbered(text).into_iter().map(|(_, r)| r).collect()
}

/// [`parse`], each result with its 1-based document number in the file.
pub fn parse_numbered(text: &str) -> Vec<(usize, Result<AppEnvironment, ReadError>)> {
    let mut out = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let number = i + 1;
        let value = match serde_yaml::Value::deserialize(document) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(value) => value,
            Err(err) => {
                out.push((
                    number,
                    Err(ReadError {
                        document: number,
                        errors: vec![FieldError {
                            path: "(document)".to_owned(),
                            message: format!("not valid YAML: {err}"),
                        }],
                    }),
                ));
                // The reader cannot go past a syntax error: it would repeat it forever.
                break;
            }
        };
        out.push((
            number,
            from_value(value).map_err(|errors| ReadError {
                document: number,
                errors,
            }),
        ));
    }
    out
}

fn from_value(value: serde_yaml::Value) -> Result<AppEnvironment, Vec<FieldError>> {
    let mut errors = Vec::new();
    let api_version = value
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let expected_version = AppEnvironment::api_version(&());
    if api_version != expected_version {
        errors.push(FieldError {
            path: "apiVersion".to_owned(),
            message: format!("must be {expected_version} (found {api_version:?})"),
        });
    }
    let kind = value
        .get("kind")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if kind != "AppEnvironment" {
        errors.push(FieldError {
            path: "kind".to_owned(),
            message: format!("must be AppEnvironment of group {GROUP} (found {kind:?})"),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let tracked = serde_ignored::Deserializer::new(value, &mut record);
    let env: AppEnvironment = serde_path_to_error::deserialize(tracked).map_err(|err| {
        vec![FieldError {
            path: err.path().to_string(),
            message: err.inner().to_string(),
        }]
    })?;
    let unknown: Vec<FieldError> = unknown
        .into_iter()
        // serde_ignored writes an optional level as `?`.
        .map(|path| path.replace(".?", ""))
        // `metadata` is Kubernetes' own and `status` the operator's: only the spec is policed.
        .filter(|path| path.starts_with("spec"))
        .map(|path| FieldError {
            message:
                "unknown field (check its spelling against `kubectl explain appenvironment.spec`)"
                    .to_owned(),
            path,
        })
        .collect();
    if unknown.is_empty() {
        Ok(env)
    } else {
        Err(unknown)
    }
}
