//! Reading AppEnvironment files: YAML (one or more documents), strictly. Unknown fields are
//! errors here, where a person can fix them; the API server would silently drop them.

use crate::field::FieldError;
use crate::{AppEnvironment, GROUP};
use kube::Resource as _;
use serde::Deserialize as _;

/// The path of a problem with a document as a whole (it is not YAML, a top-level key).
const DOCUMENT: &str = "(document)";

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
    for (i, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let number = i + 1;
        let value = match serde_norway::Value::deserialize(document) {
            Ok(serde_norway::Value::Null) => continue,
            Ok(value) => value,
            Err(err) => {
                out.push((
                    number,
                    Err(ReadError {
                        document: number,
                        errors: vec![FieldError {
                            path: DOCUMENT.to_owned(),
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

fn from_value(value: serde_norway::Value) -> Result<AppEnvironment, Vec<FieldError>> {
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
    // serde cannot say where a key that is not a string sits (its path is `?`): find them first.
    non_string_keys(&value, "", &mut errors);
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

/// Every mapping key below `value` that is not a string (`1:`, `true:`, a YAML `? ` complex key),
/// named by the path of the mapping that holds it (`(document)` at the top).
fn non_string_keys(value: &serde_norway::Value, path: &str, errors: &mut Vec<FieldError>) {
    use serde_norway::Value;
    match value {
        Value::Mapping(mapping) => {
            for (key, child) in mapping {
                match key {
                    Value::String(key) => {
                        // A path names keys; a huge one (an unknown field anyway) is cut.
                        let key = crate::field::truncate(key);
                        let child_path = if path.is_empty() {
                            key
                        } else {
                            format!("{path}.{key}")
                        };
                        non_string_keys(child, &child_path, errors);
                    }
                    other => errors.push(FieldError {
                        path: if path.is_empty() {
                            DOCUMENT.to_owned()
                        } else {
                            path.to_owned()
                        },
                        message: format!(
                            "keys must be strings, found {} (quote a key that looks like a number or boolean)",
                            kind_of(other)
                        ),
                    }),
                }
            }
        }
        Value::Sequence(items) => {
            for (index, item) in items.iter().enumerate() {
                non_string_keys(item, &format!("{path}[{index}]"), errors);
            }
        }
        Value::Tagged(tagged) => non_string_keys(&tagged.value, path, errors),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
}

/// What a YAML value is, in words, without quoting it (it may be large, or a secret).
fn kind_of(value: &serde_norway::Value) -> &'static str {
    use serde_norway::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping (a `? ` complex key)",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<(String, String)> {
        match parse(text).pop() {
            Some(Err(error)) => error
                .errors
                .into_iter()
                .map(|e| (e.path, e.message))
                .collect(),
            other => panic!("expected a read error, got {other:?}"),
        }
    }

    const HEAD: &str =
        "apiVersion: appenv.dev/v1alpha1\nkind: AppEnvironment\nmetadata:\n  name: a\n";

    #[test]
    fn a_complex_key_is_named_by_the_mapping_that_holds_it() {
        // Found by the property tests: `? ` at the top level makes a mapping a key.
        let text = format!("{HEAD}spec:\n  app: a\n? redis:\n    persistant: true\n");
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "(document)");
        assert!(found[0].1.contains("a mapping"), "{found:?}");
    }

    #[test]
    fn number_and_boolean_keys_deep_in_the_spec_are_named_with_their_path() {
        let text = format!(
            "{HEAD}spec:\n  app: a\n  workers:\n  - name: w\n    env:\n      1: x\n  web:\n    true: 2\n"
        );
        let found = problems(&text);
        let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["spec.workers[0].env", "spec.web"], "{found:?}");
        assert!(found[0].1.contains("a number"), "{found:?}");
        assert!(found[1].1.contains("a boolean"), "{found:?}");
    }

    #[test]
    fn huge_keys_on_the_way_are_cut_in_the_path() {
        let long = "k".repeat(500);
        let text = format!("{HEAD}spec:\n  {long}:\n    7: x\n");
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].0.starts_with("spec.kkk"), "{found:?}");
        assert!(found[0].0.chars().count() < 80, "{found:?}");
    }
}
