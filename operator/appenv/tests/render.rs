//! What `appenv render` itself prints, without a cluster: problems as `FILE: path: message`
//! lines naming the field and the rule (every invalid example, every bound of the CRD's schema),
//! and `--with-credentials`. The examples' objects, the CRD and its CEL rules are tested with
//! the core crate (operator/core/tests/render.rs).

use appenv::cli::render::render;
use appenv_api::crd::crd_yaml;
use appenv_core::settings::Settings;
use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn settings() -> Settings {
    Settings {
        preview_domain: Some("preview.example.com".parse().expect("domain")),
        // The Flask-React-Template examples copy their credentials from there.
        copy_from_namespaces: vec![
            appenv_core::settings::DnsLabel::parse_copy_source("flask-react-template-secrets")
                .expect("namespace"),
        ],
        // Environments may sleep (the preview below does).
        activator_service: Some(
            appenv_core::settings::ServiceRef::parse("appenv-system/appenv-activator:80")
                .expect("a service"),
        ),
        ..Settings::default()
    }
}

fn read(example: &str) -> String {
    std::fs::read_to_string(repo().join("examples").join(example)).expect("example exists")
}

/// All example files, valid ones and `invalid-*`.
fn examples(invalid: bool) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo().join("examples"))
        .expect("examples/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") && n.starts_with("invalid-") == invalid)
        .collect();
    names.sort();
    names
}

#[test]
fn credentials_appear_only_in_their_secret() {
    let text = read("t7e.yaml");
    let yaml = render(&text, "t7e.yaml", &settings(), true).expect("renders");
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml"))
        .collect();
    let secret: Secret = docs
        .iter()
        .find(|o| o["kind"] == "Secret")
        .map(|o| serde_json::from_value(o.clone()).expect("secret"))
        .expect("credentials secret");
    let data = secret.data.expect("data");
    let password = String::from_utf8(data["password"].0.clone()).expect("utf8");
    assert_eq!(password.len(), 32);
    assert!(
        String::from_utf8(data["url"].0.clone())
            .expect("utf8")
            .contains(&password)
    );
    for doc in docs.iter().filter(|o| o["kind"] != "Secret") {
        assert!(
            !doc.to_string().contains(&password),
            "password leaked into {}",
            doc["kind"]
        );
    }
    // Without --with-credentials nothing random is rendered: the operator generates it once.
    let plain = render(&text, "t7e.yaml", &settings(), false).expect("renders");
    assert!(!plain.contains(&password));
}

/// `# expect: <text>` lines of an invalid example.
fn expectations(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_invalid_example_is_rejected_naming_each_field() {
    let invalid = examples(true);
    assert!(invalid.len() >= 5, "{invalid:?}");
    for example in invalid {
        let text = read(&example);
        let expected = expectations(&text);
        assert!(!expected.is_empty(), "{example} says what it expects");
        let problems = render(&text, &example, &settings(), false).expect_err(&example);
        for want in expected {
            assert!(
                problems.iter().any(|p| p.contains(&want)),
                "{example}: no error contains {want:?}; got {problems:#?}"
            );
        }
        for problem in &problems {
            assert!(
                problem.starts_with(&format!("{example}: spec."))
                    || problem.starts_with(&format!("{example}: metadata.")),
                "{problem}"
            );
        }
    }
}

/// One bound of the CRD's schema under `spec`: the API server rejects a value past it, so
/// `appenv render` (and the operator) must too, naming the field.
struct Limit {
    /// Keys, with `None` for "the first item of the array".
    path: Vec<Option<String>>,
    rule: &'static str,
    bound: i64,
}

impl Limit {
    /// The field's path as errors name it: `spec.workers[0].name`.
    fn dotted(&self) -> String {
        let mut out = String::new();
        for segment in &self.path {
            match segment {
                Some(key) if out.is_empty() => out.push_str(key),
                Some(key) => out.push_str(&format!(".{key}")),
                None => out.push_str("[0]"),
            }
        }
        out
    }

    /// A value just past the bound, shaped after the field's current value (`current`).
    fn past(&self, current: &Value) -> Value {
        let n = usize::try_from(self.bound).expect("bounds of lengths are not negative");
        match self.rule {
            "maxLength" => match current.as_str() {
                Some(path) if path.starts_with('/') => Value::from(format!("/{}", "a".repeat(n))),
                _ => Value::from("a".repeat(n + 1)),
            },
            "minLength" => {
                let text = current.as_str().unwrap_or("/abcdefgh");
                Value::from(text.chars().take(n.saturating_sub(1)).collect::<String>())
            }
            "maxItems" => {
                let first = current.get(0).cloned().unwrap_or_else(|| {
                    panic!(
                        "no example has an item of {}: give one in `field`",
                        self.dotted()
                    )
                });
                // Distinct items, so that only the count is wrong.
                let items = (0..=n).map(|i| match &first {
                    Value::Object(item) if item.get("name").is_some_and(Value::is_string) => {
                        let mut item = item.clone();
                        let name = format!("{}x{i}", item["name"].as_str().unwrap_or("item"));
                        item.insert("name".into(), Value::from(name));
                        Value::Object(item)
                    }
                    Value::Number(_) => Value::from(i + 1),
                    other => other.clone(),
                });
                Value::Array(items.collect())
            }
            "minItems" => Value::Array(Vec::new()),
            "maximum" => Value::from(self.bound + 1),
            "minimum" => Value::from(self.bound - 1),
            other => panic!("no value past {other}"),
        }
    }
}

/// Every length, count and range bound under `schema`, depth first.
fn limits(schema: &Value, path: &mut Vec<Option<String>>, out: &mut Vec<Limit>) {
    for rule in [
        "maxLength",
        "minLength",
        "maxItems",
        "minItems",
        "maximum",
        "minimum",
    ] {
        if let Some(bound) = schema.get(rule).and_then(Value::as_f64) {
            let bound = bound as i64;
            out.push(Limit {
                path: path.clone(),
                rule,
                bound,
            });
        }
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (key, property) in properties {
            path.push(Some(key.clone()));
            limits(property, path, out);
            path.pop();
        }
    }
    if let Some(items) = schema.get("items") {
        path.push(None);
        limits(items, path, out);
        path.pop();
    }
}

/// The field at `path` in `doc` (with `create`, created if only its last key is missing);
/// `None` when it or its parent is not there. Lists absent from every example get a sample item here.
fn field<'a>(doc: &'a mut Value, path: &[Option<String>], create: bool) -> Option<&'a mut Value> {
    let (last, parents) = path.split_last()?;
    let mut at = doc;
    for segment in parents {
        at = match segment {
            Some(key) => at.get_mut(key.as_str())?,
            None => at.get_mut(0)?,
        };
    }
    match last {
        Some(key) => {
            let object = at.as_object_mut()?;
            if create && !object.contains_key(key.as_str()) {
                // A list needs an item to repeat; a scalar is replaced anyway.
                let sample = match key.as_str() {
                    "imagePullSecrets" => serde_json::json!(["registry"]),
                    _ => Value::Null,
                };
                object.insert(key.clone(), sample);
            }
            object.get_mut(key.as_str())
        }
        None => at.get_mut(0),
    }
}

const PREVIEW_FROM_DUMP: &str = "
apiVersion: appenv.dev/v1alpha1
kind: AppEnvironment
metadata: {name: dojo-pr-3}
spec:
  app: dojo
  profile: Preview
  image: ghcr.io/blogle/dojo:sha-1234567
  web: {port: 8000}
  database:
    embedded: {engine: DuckDB, path: /data/ledger.duckdb}
    restore:
      fromUrl:
        url: https://github.com/blogle/dojo/releases/download/v0.1.0/demo-ledger.duckdb
        sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
  backup:
    destination:
      volumeSnapshot: {className: csi-snapshots}
  sleep: {afterIdle: 45m}
";

#[test]
fn every_bound_in_the_crd_schema_is_checked_by_the_rust_validation() {
    // The extra document is valid as it is.
    render(
        PREVIEW_FROM_DUMP,
        "preview-from-dump.yaml",
        &settings(),
        false,
    )
    .expect("a valid preview from a dump");
    let crd: Value = serde_norway::from_str(&crd_yaml().expect("crd")).expect("CRD parses");
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut found = Vec::new();
    limits(spec, &mut vec![Some("spec".into())], &mut found);
    assert!(found.len() >= 40, "{} bounds", found.len());
    let mut valid: Vec<(String, Value)> = examples(false)
        .into_iter()
        .map(|name| {
            let doc = serde_norway::from_str(&read(&name)).expect("example parses");
            (name, doc)
        })
        .collect();
    // Fields none of the seeds' systems uses: a preview started from a dump at a URL, backed up
    // as VolumeSnapshots, that sleeps when idle.
    valid.push((
        "preview-from-dump.yaml".to_owned(),
        serde_norway::from_str(PREVIEW_FROM_DUMP).expect("parses"),
    ));
    let mut unchecked = Vec::new();
    for limit in &found {
        let path = limit.dotted();
        // The first valid example that has the field, else the first that has its parent, with
        // the field past its bound.
        let Some((example, doc)) = [false, true].into_iter().find_map(|create| {
            valid.iter().find_map(|(name, doc)| {
                let mut doc = doc.clone();
                let at = field(&mut doc, &limit.path, create)?;
                *at = limit.past(at);
                Some((name, doc))
            })
        }) else {
            panic!("no example has the parent of {path}: add it to one");
        };
        let text = serde_norway::to_string(&doc).expect("YAML");
        let problems = render(&text, example, &settings(), false)
            .err()
            .unwrap_or_default();
        let named = format!("{example}: {path}: ");
        if !problems.iter().any(|p| p.starts_with(&named)) {
            unchecked.push(format!(
                "{path} {} {} ({example}): {problems:?}",
                limit.rule, limit.bound
            ));
        }
    }
    assert!(
        unchecked.is_empty(),
        "the API server rejects these, `appenv render` does not name them:\n{}",
        unchecked.join("\n")
    );
}
