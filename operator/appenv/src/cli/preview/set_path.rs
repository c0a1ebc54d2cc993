//! `--set PATH=VALUE` of `appenv preview up`, strictly: every path is checked against the
//! AppEnvironment schema of the generated CRD (the one the API server prunes by), so a typo is
//! an error with a suggestion here instead of a field the server silently drops.
//!
//! A path is dot-separated field names; a list is indexed by a number, as `workers.1` or as
//! `workers[1]` (the form the strict manifest reader's errors use, so they can be pasted back).

use appenv_api::AppEnvironment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::Resource as _;
use serde_json::{Map, Value};

/// One `--set` that cannot be applied; its message names the path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--set {assignment}: {problem}")]
pub struct SetError {
    assignment: String,
    problem: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Field(String),
    Index(usize),
}

/// One step of a path, with where it sits in the path as written (to quote the path up to it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    step: Step,
    /// The end of the path up to the step before (the object or list this step goes into).
    parent_end: usize,
    end: usize,
}

impl Segment {
    /// The path of what this step goes into, as written; `spec` at the top.
    fn parent<'a>(&self, path: &'a str) -> &'a str {
        match &path[..self.parent_end] {
            "" => "spec",
            parent => parent,
        }
    }
}

/// The schema of `spec` in the generated CRD.
pub fn spec_schema() -> Option<JSONSchemaProps> {
    let crd = appenv_api::crd::crd();
    let version = crd
        .spec
        .versions
        .into_iter()
        .find(|v| v.name == AppEnvironment::version(&()))?;
    version
        .schema?
        .open_api_v3_schema?
        .properties?
        .remove("spec")
}

/// Apply `assignment` (`PATH=VALUE`, the value read as YAML: `2` is a number) to `spec`,
/// refusing a path the schema does not have, an index past the end of a list, and a field of
/// a scalar. A leading `spec.` is optional.
pub fn set(spec: &mut Value, schema: &JSONSchemaProps, assignment: &str) -> Result<(), SetError> {
    let fail = |problem: String| SetError {
        assignment: assignment.to_owned(),
        problem,
    };
    let (path, raw) = assignment
        .split_once('=')
        .ok_or_else(|| fail("expected PATH=VALUE".to_owned()))?;
    let mut segments = parse_path(path).map_err(fail)?;
    if segments.first().map(|s| &s.step) == Some(&Step::Field("spec".to_owned())) {
        segments.remove(0);
    }
    if segments.is_empty() {
        return Err(fail("the path names no field".to_owned()));
    }
    check_schema(schema, path, &segments).map_err(fail)?;
    let value: Value =
        serde_norway::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
    // On a copy: a path that fails halfway leaves no empty objects behind.
    let mut changed = spec.clone();
    assign(&mut changed, path, &segments, value).map_err(fail)?;
    *spec = changed;
    Ok(())
}

/// `web.replicas`, `workers.1.replicas` or `workers[1].replicas` as steps.
fn parse_path(path: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    let mut start = 0;
    for piece in path.split('.') {
        let end = start + piece.len();
        let (name, mut brackets) = match piece.find('[') {
            Some(at) => piece.split_at(at),
            None => (piece, ""),
        };
        if name.is_empty() {
            return Err(format!(
                "empty field name at {:?} (a path is `field.field`, a list index `field.0` or `field[0]`)",
                &path[..end]
            ));
        }
        segments.push(Segment {
            step: match name.parse::<usize>() {
                Ok(index) => Step::Index(index),
                Err(_) => Step::Field(name.to_owned()),
            },
            parent_end: start.saturating_sub(1),
            end: start + name.len(),
        });
        let mut at = start + name.len();
        while !brackets.is_empty() {
            let index = brackets
                .strip_prefix('[')
                .and_then(|rest| rest.split_once(']'))
                .and_then(|(number, rest)| number.parse::<usize>().ok().map(|n| (n, rest)));
            let Some((index, rest)) = index else {
                return Err(format!(
                    "{:?}: a list index is a number in brackets, e.g. `workers[0]` (or `workers.0`)",
                    &path[..end]
                ));
            };
            let parent_end = at;
            at += brackets.len() - rest.len();
            segments.push(Segment {
                step: Step::Index(index),
                parent_end,
                end: at,
            });
            brackets = rest;
        }
        start = end + 1;
    }
    Ok(segments)
}

/// What a scalar schema holds, in words.
fn kind_of(schema: &JSONSchemaProps) -> String {
    if schema.x_kubernetes_int_or_string == Some(true) {
        return "a number or string".to_owned();
    }
    match schema.type_.as_deref() {
        Some("integer") => "an integer".to_owned(),
        Some("number") => "a number".to_owned(),
        Some("boolean") => "a boolean".to_owned(),
        Some("string") => match &schema.enum_ {
            Some(values) if !values.is_empty() => {
                let names: Vec<String> = values.iter().map(|v| v.0.to_string()).collect();
                format!("one of {}", names.join(", "))
            }
            _ => "a string".to_owned(),
        },
        Some(other) => format!("a value of type {other}"),
        None => "a value".to_owned(),
    }
}

/// Follow `segments` through the schema: every field must exist, every index must index a list.
fn check_schema(schema: &JSONSchemaProps, path: &str, segments: &[Segment]) -> Result<(), String> {
    let mut node = schema;
    for segment in segments {
        let here = &path[..segment.end];
        let parent_name = segment.parent(path);
        if node.x_kubernetes_preserve_unknown_fields == Some(true) {
            return Ok(());
        }
        let items = match &node.items {
            Some(JSONSchemaPropsOrArray::Schema(items)) => Some(&**items),
            Some(JSONSchemaPropsOrArray::Schemas(items)) => items.first(),
            None => None,
        };
        let map_values = match &node.additional_properties {
            Some(JSONSchemaPropsOrBool::Schema(values)) => Some(Some(&**values)),
            Some(JSONSchemaPropsOrBool::Bool(true)) => Some(None),
            _ => None,
        };
        node = match (&segment.step, &node.properties, items, map_values) {
            (Step::Index(_), _, Some(items), _) => items,
            (Step::Field(_), _, Some(_), _) => {
                return Err(format!(
                    "{parent_name} is a list: index it with a number, as {parent_name}.0 or {parent_name}[0]"
                ));
            }
            (step, Some(fields), _, _) => {
                let name = match step {
                    Step::Field(name) => name.clone(),
                    Step::Index(index) => index.to_string(),
                };
                match fields.get(&name) {
                    Some(field) => field,
                    None => return Err(unknown_field(path, segment, &name, fields.keys())),
                }
            }
            // A map (labels, annotations, quantities): any key, its values' schema below.
            (_, None, None, Some(Some(values))) => values,
            (_, None, None, Some(None)) => return Ok(()),
            (_, None, None, None) => {
                return Err(format!(
                    "{parent_name} is {}: it has no field {here}",
                    kind_of(node)
                ));
            }
        };
    }
    Ok(())
}

fn unknown_field<'a>(
    path: &str,
    segment: &Segment,
    name: &str,
    fields: impl Iterator<Item = &'a String>,
) -> String {
    let here = &path[..segment.end];
    let parent = segment.parent(path);
    let prefix = if segment.parent_end == 0 {
        String::new()
    } else {
        format!("{parent}.")
    };
    let fields: Vec<&String> = fields.collect();
    let nearest = fields
        .iter()
        .map(|field| (edit_distance(name, field), *field))
        .min()
        .filter(|(distance, _)| *distance <= (name.chars().count() / 3).max(2));
    match nearest {
        Some((_, field)) => format!(
            "{here} is not a field of the AppEnvironment spec; did you mean {prefix}{field}?"
        ),
        None => {
            let names: Vec<&str> = fields.iter().map(|f| f.as_str()).collect();
            format!(
                "{here} is not a field of the AppEnvironment spec (the fields of {parent}: {})",
                names.join(", ")
            )
        }
    }
}

/// Levenshtein distance, ignoring case (`Replicas` is a slip of `replicas`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// Write `value` at `segments`, creating the objects on the way; a list must already have the
/// item that is indexed.
fn assign(node: &mut Value, path: &str, segments: &[Segment], value: Value) -> Result<(), String> {
    let Some((segment, rest)) = segments.split_first() else {
        *node = value;
        return Ok(());
    };
    let parent_name = segment.parent(path);
    let here = &path[..segment.end];
    let child = match (&segment.step, node) {
        (Step::Index(index), Value::Array(items)) => {
            let len = items.len();
            items.get_mut(*index).ok_or_else(|| {
                format!("{here}: index {index} is past the end of {parent_name}, which has {len} item(s)")
            })?
        }
        (Step::Index(_), Value::Null) => {
            return Err(format!(
                "{here}: the spec has no {parent_name} list to index (set the whole list instead)"
            ));
        }
        (Step::Field(name), node) if node.is_null() || node.is_object() => {
            if node.is_null() {
                *node = Value::Object(Map::new());
            }
            let Value::Object(map) = node else {
                return Err(format!("{parent_name} is not an object"));
            };
            map.entry(name.clone()).or_insert(Value::Null)
        }
        // A map keyed by a number (e.g. an annotation `"1"`): the schema allowed it.
        (Step::Index(index), Value::Object(map)) => {
            map.entry(index.to_string()).or_insert(Value::Null)
        }
        (_, node) => {
            return Err(format!(
                "{parent_name} is {}: it has no field {here}",
                match node {
                    Value::Array(_) => "a list",
                    Value::String(_) => "a string",
                    Value::Number(_) => "a number",
                    Value::Bool(_) => "a boolean",
                    _ => "a value",
                }
            ));
        }
    };
    assign(child, path, rest, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> JSONSchemaProps {
        spec_schema().expect("the CRD has a spec schema")
    }

    fn spec() -> Value {
        json!({
            "app": "a",
            "image": "i:1",
            "web": {"replicas": 2},
            "workers": [{"name": "worker", "command": ["w"]}, {"name": "beat", "command": ["b"]}],
        })
    }

    fn error(assignment: &str) -> String {
        let mut spec = spec();
        let err = set(&mut spec, &schema(), assignment).expect_err(assignment);
        assert_eq!(spec, self::spec(), "a refused --set changes nothing");
        err.to_string()
    }

    #[test]
    fn a_misspelt_field_names_the_whole_path_and_the_nearest_field() {
        assert_eq!(
            error("web.replicaz=2"),
            "--set web.replicaz=2: web.replicaz is not a field of the AppEnvironment spec; did you mean web.replicas?"
        );
        assert_eq!(
            error("workers.1.replicaz=2"),
            "--set workers.1.replicaz=2: workers.1.replicaz is not a field of the AppEnvironment spec; did you mean workers.1.replicas?"
        );
        assert_eq!(
            error("imgae=x"),
            "--set imgae=x: imgae is not a field of the AppEnvironment spec; did you mean image?"
        );
        assert_eq!(
            error("spec.workers[1].replicaz=2"),
            "--set spec.workers[1].replicaz=2: spec.workers[1].replicaz is not a field of the AppEnvironment spec; did you mean spec.workers[1].replicas?"
        );
    }

    #[test]
    fn a_field_nothing_like_any_other_lists_the_fields_of_its_level() {
        let message = error("web.zzzzzzzzzz=1");
        assert!(
            message.starts_with(
                "--set web.zzzzzzzzzz=1: web.zzzzzzzzzz is not a field of the AppEnvironment spec (the fields of web: "
            ),
            "{message}"
        );
        assert!(message.contains("replicas"), "{message}");
        assert!(!message.contains("did you mean"), "{message}");
    }

    #[test]
    fn brackets_and_dots_index_lists_alike() {
        let schema = schema();
        let mut dotted = spec();
        set(&mut dotted, &schema, "workers.1.replicas=3").expect("dots");
        let mut bracketed = spec();
        set(&mut bracketed, &schema, "workers[1].replicas=3").expect("brackets");
        assert_eq!(dotted, bracketed);
        assert_eq!(dotted["workers"][1]["replicas"], 3);
        let mut prefixed = spec();
        set(&mut prefixed, &schema, "spec.workers[0].command[0]=x").expect("spec. prefix");
        assert_eq!(prefixed["workers"][0]["command"][0], "x");
    }

    #[test]
    fn an_index_past_the_end_or_into_a_missing_list_names_the_path() {
        assert_eq!(
            error("workers[5].replicas=1"),
            "--set workers[5].replicas=1: workers[5]: index 5 is past the end of workers, which has 2 item(s)"
        );
        assert_eq!(
            error("imagePullSecrets.0=x"),
            "--set imagePullSecrets.0=x: imagePullSecrets.0: the spec has no imagePullSecrets list to index (set the whole list instead)"
        );
    }

    #[test]
    fn a_field_of_a_scalar_or_a_name_on_a_list_is_refused() {
        assert_eq!(
            error("web.replicas.max=1"),
            "--set web.replicas.max=1: web.replicas is an integer: it has no field web.replicas.max"
        );
        assert_eq!(
            error("imagePullSecrets.0.name=x"),
            "--set imagePullSecrets.0.name=x: imagePullSecrets.0 is a string: it has no field imagePullSecrets.0.name"
        );
        assert_eq!(
            error("workers.beat.replicas=1"),
            "--set workers.beat.replicas=1: workers is a list: index it with a number, as workers.0 or workers[0]"
        );
    }

    #[test]
    fn malformed_paths_are_refused_with_the_accepted_forms() {
        assert_eq!(
            error("workers[x].replicas=1"),
            "--set workers[x].replicas=1: \"workers[x]\": a list index is a number in brackets, e.g. `workers[0]` (or `workers.0`)"
        );
        assert!(error("web..replicas=1").contains("empty field name"));
        assert_eq!(error("novalue"), "--set novalue: expected PATH=VALUE");
    }

    #[test]
    fn map_keys_are_free_and_values_are_read_as_yaml() {
        let schema = schema();
        let mut spec = spec();
        set(&mut spec, &schema, "web.podAnnotations.example.com/x=true").expect_err(
            "dots split a path: an annotation key with dots cannot be set (and is refused)",
        );
        set(&mut spec, &schema, "web.podAnnotations.team=payments").expect("a map key");
        set(&mut spec, &schema, "web.replicas=3").expect("a number");
        assert_eq!(spec["web"]["podAnnotations"]["team"], "payments");
        assert_eq!(spec["web"]["replicas"], 3);
    }

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("replicaz", "replicas"), 1);
        assert_eq!(edit_distance("Replicas", "replicas"), 0);
        assert_eq!(edit_distance("img", "image"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
