//! The AppEnvironment CRD on real API servers of two generations: a current Kubernetes CRD
//! server (apiextensions-apiserver 1.36, `appenv_localcluster::crd_server`, built by
//! `.ci/crd-server.sh`) and the local control plane the other integration tests use (Kubernetes
//! 1.20 on these machines). Every check is one function run against both (tests `current` and
//! `control_plane` of the same name), except where it cannot apply. What a server does follows
//! from its version (before 1.25 it knows no CEL), so a newer control plane (as the GitHub
//! workflow downloads) is held to what the current server does:
//!
//! | check | current (1.36) | control plane (1.20 here) |
//! |---|---|---|
//! | the generated CRD installs and is Established | with its CEL rules (no cost-budget error) | without them, as appenv installs it there (1.20 refuses them: shown) |
//! | valid examples accepted by server-side apply | yes | yes |
//! | `invalid-*` examples rejected by the server | every one; CEL rules with appenv's rule text | only what a schema without CEL catches (unknown fields, wrong types, bounds); the rest is asserted *accepted*: there the operator's validate step (the Valid condition) is what rejects it |
//! | status only through the status subresource | yes | yes |
//! | printer columns through the Table API | yes | yes |
//! | `kubectl explain` prints the field descriptions | yes | not run: the check is for the current server's OpenAPI v3 |
//! | the previous CRD is replaced without loss | yes | yes (CEL rules left out of both) |
//!
//! Each server has one CRD that every check installs or replaces, so the checks of one server
//! run one at a time (`Server::exclusive`).

mod common;

use appenv::cli::render::render;
use appenv_api::AppEnvironment;
use appenv_api::crd::{CEL_SINCE_MINOR, CRD_PATH, crd};
use appenv_core::settings::Settings;
use appenv_localcluster::crd_server;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, GetParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::conditions;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, MutexGuard};

/// The field manager `appenv dev --examples` applies the examples with (src/cli/dev.rs).
const CLI_MANAGER: &str = "appenv-dev";
/// The operator's field manager: it installs the CRD and writes status with it.
const OPERATOR_MANAGER: &str = appenv_core::build::FIELD_MANAGER;
const CRD_NAME: &str = "appenvironments.appenv.dev";
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    /// apiextensions-apiserver of the current Kubernetes release.
    Current,
    /// The shared local control plane of this test binary (1.20 here).
    ControlPlane,
}

impl Server {
    async fn client(self) -> Client {
        match self {
            Self::Current => crd_server::shared()
                .client()
                .await
                .expect("client for the CRD server"),
            Self::ControlPlane => common::client().await,
        }
    }

    /// Held for the whole of a check: the checks of one server share its one CRD.
    async fn exclusive(self) -> MutexGuard<'static, ()> {
        static CURRENT: Mutex<()> = Mutex::const_new(());
        static CONTROL_PLANE: Mutex<()> = Mutex::const_new(());
        match self {
            Self::Current => CURRENT.lock().await,
            Self::ControlPlane => CONTROL_PLANE.lock().await,
        }
    }

    /// A name for the objects of one check, distinct per server.
    fn name(self, check: &str) -> String {
        match self {
            Self::Current => format!("{check}-current"),
            Self::ControlPlane => format!("{check}-cp"),
        }
    }
}

/// One test per server for a check.
macro_rules! on_both_servers {
    ($($check:ident),* $(,)?) => {$(
        mod $check {
            #[tokio::test]
            async fn current() {
                super::$check(super::Server::Current).await;
            }
            #[tokio::test]
            async fn control_plane() {
                super::$check(super::Server::ControlPlane).await;
            }
        }
    )*};
}

on_both_servers!(
    the_generated_crd_installs_and_is_established,
    valid_examples_are_accepted_and_invalid_ones_rejected_by_the_server,
    status_is_written_only_through_the_status_subresource,
    printer_columns_are_served_through_the_table_api,
    the_previous_crd_is_replaced_without_loss,
);

/// Whether the server enforces CEL rules (`x-kubernetes-validations`, Kubernetes 1.25+).
async fn enforces_cel(client: &Client) -> bool {
    appenv_controller::crd::server_minor(client)
        .await
        .expect("server version")
        >= CEL_SINCE_MINOR
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn crd_from_yaml(text: &str) -> CustomResourceDefinition {
    serde_norway::from_str(text).expect("a CustomResourceDefinition")
}

/// The CRD without its CEL rules, as a server before 1.25 must get it.
fn without_cel(crd: &CustomResourceDefinition) -> CustomResourceDefinition {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.remove("x-kubernetes-validations");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(crd).expect("crd");
    strip(&mut value);
    serde_json::from_value(value).expect("crd")
}

/// Every CEL rule in the CRD: (rule, message).
fn cel_rules(crd: &CustomResourceDefinition) -> Vec<(String, String)> {
    fn collect(value: &Value, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                    out.extend(rules.iter().map(|r| {
                        let text = |key: &str| r[key].as_str().unwrap_or_default().to_owned();
                        (text("rule"), text("message"))
                    }));
                }
                map.values().for_each(|v| collect(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    collect(&serde_json::to_value(crd).expect("crd"), &mut out);
    out
}

/// Server-side apply `crd` (as the operator installs it) and wait until it is Established.
async fn install(client: &Client, crd: &CustomResourceDefinition) -> CustomResourceDefinition {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        CRD_NAME,
        &PatchParams::apply(OPERATOR_MANAGER).force(),
        &Patch::Apply(crd),
    )
    .await
    .unwrap_or_else(|e| panic!("the server refuses the CRD: {e}"));
    common::wait_for(
        &api,
        CRD_NAME,
        Duration::from_secs(30),
        "Established",
        conditions::is_crd_established(),
    )
    .await
    .expect("the CRD")
}

/// The generated CRD, installed by the operator's own code (the shape that fits the server).
async fn install_current(client: &Client) {
    appenv_controller::crd::install(client, OPERATOR_MANAGER)
        .await
        .expect("the generated CRD installs");
}

fn environments(client: &Client) -> Api<AppEnvironment> {
    Api::all(client.clone())
}

/// The example files, sorted: the valid ones, or the `invalid-*` ones.
fn examples(invalid: bool) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo().join("examples"))
        .expect("examples/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") && n.starts_with("invalid-") == invalid)
        .collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    names
}

fn read_example(file: &str) -> String {
    std::fs::read_to_string(repo().join("examples").join(file)).expect("example")
}

/// An example as a user's file is: raw YAML, unknown fields and wrong types included.
fn raw_example(file: &str) -> Value {
    serde_norway::from_str(&read_example(file)).expect("example is YAML")
}

/// Server-side apply of a raw object, as `appenv dev --examples` does.
async fn apply_raw(client: &Client, object: &Value) -> Result<AppEnvironment, kube::Error> {
    let name = object["metadata"]["name"].as_str().expect("a name");
    environments(client)
        .patch(
            name,
            &PatchParams::apply(CLI_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
}

async fn delete(client: &Client, name: &str) {
    let _ = environments(client)
        .delete(name, &DeleteParams::default())
        .await;
}

/// Every leaf of `want` is in `have` with the same value: nothing was pruned or changed.
fn contains(have: &Value, want: &Value, path: &str) -> Result<(), String> {
    match (have, want) {
        (Value::Object(have), Value::Object(want)) => want.iter().try_for_each(|(k, v)| {
            contains(
                have.get(k).unwrap_or(&Value::Null),
                v,
                &format!("{path}.{k}"),
            )
        }),
        (Value::Array(have), Value::Array(want)) if have.len() == want.len() => have
            .iter()
            .zip(want)
            .enumerate()
            .try_for_each(|(i, (h, w))| contains(h, w, &format!("{path}[{i}]"))),
        _ if have == want => Ok(()),
        _ => Err(format!("{path}: sent {want}, stored {have}")),
    }
}

async fn the_generated_crd_installs_and_is_established(server: Server) {
    let client = server.client().await;
    let cel = enforces_cel(&client).await;
    let _exclusive = server.exclusive().await;
    let committed =
        crd_from_yaml(&std::fs::read_to_string(repo().join(CRD_PATH)).expect("the committed CRD"));
    assert_eq!(
        serde_json::to_value(&committed).expect("json"),
        serde_json::to_value(crd()).expect("json"),
        "{CRD_PATH} is what appenv-api generates"
    );
    let rules = cel_rules(&committed).len();
    assert!(rules >= 10, "the CRD has its CEL rules: {rules}");

    if cel {
        // The committed file itself: with every CEL rule, within the cost budget (a rule over
        // it would make the server refuse the CRD).
        let stored = install(&client, &committed).await;
        assert_eq!(
            cel_rules(&stored).len(),
            rules,
            "the server kept every rule"
        );
    } else {
        // 1.20 refuses the rules under server-side apply, which is why appenv leaves them out
        // for servers before 1.25 (appenv_api::crd::crd_for_server).
        let refused = Api::<CustomResourceDefinition>::all(client.clone())
            .patch(
                CRD_NAME,
                &PatchParams::apply(OPERATOR_MANAGER).force().dry_run(),
                &Patch::Apply(&committed),
            )
            .await
            .expect_err("1.20 refuses x-kubernetes-validations");
        assert!(
            refused.to_string().contains("x-kubernetes-validations"),
            "{refused}"
        );
        let stored = install(&client, &without_cel(&committed)).await;
        assert!(cel_rules(&stored).is_empty());
    }
    // What the operator does at start-up: a no-op on the CRD just installed.
    install_current(&client).await;
    let stored = Api::<CustomResourceDefinition>::all(client.clone())
        .get(CRD_NAME)
        .await
        .expect("the CRD");
    let conditions = stored.status.and_then(|s| s.conditions).unwrap_or_default();
    for wanted in ["NamesAccepted", "Established"] {
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == wanted && c.status == "True"),
            "{wanted}: {conditions:#?}"
        );
    }
}

/// `spec.workers[1].replicas` -> `spec.workers[].replicas`: how the CRD's messages name a field.
fn without_indices(path: &str) -> String {
    let mut out = String::new();
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

/// The rule of a message, without what varies between appenv's and the CRD's wording of it:
/// the offending value appenv quotes (`"My_App" must be ...`) and the explanation after the
/// rule, in a closing parenthesis or after a colon (`must be a DNS label: at most 40 ...`).
fn rule_text(text: &str) -> String {
    let mut text = text.trim();
    if let Some(rest) = text.strip_prefix('"')
        && let Some((_, after)) = rest.split_once("\" ")
    {
        text = after;
    }
    if let Some((rule, _)) = text.split_once(": ") {
        text = rule;
    }
    if text.ends_with(')')
        && let Some((before, _)) = text.rsplit_once(" (")
    {
        text = before;
    }
    text.to_owned()
}

/// Rules whose CEL message words the rule differently from appenv's own validation (field, appenv's
/// rule text, the CRD's rule text): none since the two found on 2026-12-01 were aligned. The
/// wording lives in operator/api/src/spec.rs; a new difference fails the test until it is
/// aligned (or, deliberately, listed here).
const WORDED_DIFFERENTLY: &[(&str, &str, &str)] = &[];

/// What appenv's own validation (`appenv render`: the strict reader and appenv-core's
/// `validate`) says of an invalid example: `path: message` lines.
fn appenv_problems(file: &str) -> Vec<String> {
    let settings = Settings {
        preview_domain: Some("preview.example.com".parse().expect("domain")),
        ..Settings::default()
    };
    let problems = render(&read_example(file), file, &settings, false)
        .expect_err("appenv rejects the invalid example");
    problems
        .iter()
        .map(|p| p.strip_prefix(&format!("{file}: ")).unwrap_or(p).to_owned())
        .collect()
}

/// What a server does with an invalid example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Refused with this HTTP status, naming fields appenv names too.
    Rejected(u16),
    /// Stored without the fields its schema does not declare (pruned, silently).
    StoredPruned,
    /// Stored as sent: only the operator's validate step (the Valid condition) stops it.
    Stored,
}

/// A current server rejects every invalid example: as Invalid (422), except undeclared fields
/// and values of the wrong type, which server-side apply refuses before any validation, while
/// building the typed patch, as an internal error (500 "failed to create typed patch object":
/// "field not declared in schema", "expected numeric"; the same handler serves custom resources
/// in kube-apiserver). A server before 1.25 (1.20, as seen here) has no CEL: it rejects only
/// what the schema's types and bounds catch, and silently prunes undeclared fields.
fn outcome(enforces_cel: bool, file: &str) -> Outcome {
    match (enforces_cel, file) {
        (true, "invalid-unknown-field.yaml" | "invalid-wrong-type.yaml") => Outcome::Rejected(500),
        (true, _) => Outcome::Rejected(422),
        (false, "invalid-unknown-field.yaml") => Outcome::StoredPruned,
        (false, "invalid-values.yaml" | "invalid-wrong-type.yaml") => Outcome::Rejected(422),
        (false, _) => Outcome::Stored,
    }
}

/// The invalid examples the current server rejects with a CEL rule of the CRD, and the field
/// of each rule (the other rejections come from the schema: unknown fields, types, bounds).
const CEL_VERDICTS: &[(&str, &str)] = &[
    ("invalid-embedded-replicas.yaml", "spec.web.replicas"),
    ("invalid-names.yaml", "spec.app"),
    ("invalid-names.yaml", "spec.workers[].name"),
    ("invalid-restore.yaml", "spec.database.restore"),
    (
        "invalid-restore.yaml",
        "spec.database.restore.credentialsSecret",
    ),
    ("invalid-restore.yaml", "spec.database.restore.fromUrl"),
    ("invalid-singleton-replicas.yaml", "spec.workers[].replicas"),
    ("invalid-two-databases.yaml", "spec.database"),
    ("invalid-two-databases.yaml", "spec.migrations"),
    ("invalid-values.yaml", "spec.preview.ttl"),
];

async fn valid_examples_are_accepted_and_invalid_ones_rejected_by_the_server(server: Server) {
    let client = server.client().await;
    let cel = enforces_cel(&client).await;
    let _exclusive = server.exclusive().await;
    install_current(&client).await;

    for file in examples(false) {
        let example = raw_example(&file);
        let stored = apply_raw(&client, &example)
            .await
            .unwrap_or_else(|e| panic!("{file}: refused: {e}"));
        let stored_value = serde_json::to_value(&stored).expect("json");
        contains(&stored_value["spec"], &example["spec"], "spec")
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let managers: Vec<_> = stored
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|m| Some((m.manager.as_deref()?, m.operation.as_deref()?)))
            .collect();
        assert!(
            managers.contains(&(CLI_MANAGER, "Apply")),
            "{file}: {managers:?}"
        );
        delete(&client, &stored.metadata.name.unwrap_or_default()).await;
    }

    let rules = cel_rules(&crd());
    let mut differently = Vec::new();
    let mut verdicts = Vec::new();
    for file in examples(true) {
        let example = raw_example(&file);
        let name = example["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_owned();
        let problems = appenv_problems(&file);
        let answer = apply_raw(&client, &example).await;
        let message = match (outcome(cel, &file), answer) {
            (Outcome::Rejected(code), Err(kube::Error::Api(status))) if status.code == code => {
                status.message
            }
            (Outcome::Stored, Ok(stored)) => {
                let stored = serde_json::to_value(&stored).expect("json");
                contains(&stored["spec"], &example["spec"], "spec")
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
                delete(&client, &name).await;
                continue;
            }
            (Outcome::StoredPruned, Ok(stored)) => {
                let stored = serde_json::to_value(&stored).expect("json");
                let pruned = contains(&stored["spec"], &example["spec"], "spec")
                    .expect_err("a field was dropped");
                assert!(
                    problems.iter().any(|p| pruned
                        .starts_with(&format!("{}:", p.split_once(": ").map_or("", |(f, _)| f)))),
                    "{file}: dropped {pruned}, appenv reports {problems:#?}"
                );
                delete(&client, &name).await;
                continue;
            }
            (expected, answer) => panic!("{file}: expected {expected:?}, got {answer:?}"),
        };
        // The server names what appenv names.
        assert!(
            problems.iter().any(|p| {
                let field = p.split_once(": ").map_or("", |(f, _)| f);
                message.contains(field) || message.contains(&without_indices(field))
            }),
            "{file}: the server names none of appenv's fields: {message}\n{problems:#?}"
        );
        if !cel {
            continue;
        }
        // Every CEL rule the server reports is one appenv's validation has for the same field,
        // and it words the rule as appenv does.
        for (_, reported) in rules.iter().filter(|(_, m)| message.contains(m.as_str())) {
            let (field, crds) = reported.split_once(": ").expect("field: message");
            let ours: Vec<String> = problems
                .iter()
                .filter_map(|p| p.split_once(": "))
                .filter(|(f, _)| without_indices(f) == field)
                .map(|(_, text)| rule_text(text))
                .collect();
            assert!(
                !ours.is_empty(),
                "{file}: the server rejects {field} ({reported}), appenv does not: {problems:#?}"
            );
            verdicts.push((file.clone(), field.to_owned()));
            let crds = rule_text(crds);
            if !ours.contains(&crds) {
                differently.push((field.to_owned(), ours.join(" | "), crds));
            }
        }
    }
    if cel {
        let mut expected: Vec<(String, String, String)> = WORDED_DIFFERENTLY
            .iter()
            .map(|(f, a, b)| ((*f).to_owned(), (*a).to_owned(), (*b).to_owned()))
            .collect();
        expected.sort();
        differently.sort();
        differently.dedup();
        assert_eq!(
            differently, expected,
            "CEL messages that word a rule differently from appenv's validation"
        );
        let expected: Vec<(String, String)> = CEL_VERDICTS
            .iter()
            .map(|(file, field)| ((*file).to_owned(), (*field).to_owned()))
            .collect();
        verdicts.sort();
        assert_eq!(verdicts, expected, "the CEL rules the server applied");
    }
}

async fn status_is_written_only_through_the_status_subresource(server: Server) {
    let client = server.client().await;
    let _exclusive = server.exclusive().await;
    install_current(&client).await;
    let name = server.name("status");
    let api = environments(&client);
    let env = |image: &str, status: Option<Value>| {
        let mut env = json!({"apiVersion": "appenv.dev/v1alpha1", "kind": "AppEnvironment",
            "metadata": {"name": name}, "spec": {"app": "status", "image": image}});
        if let Some(status) = status {
            env["status"] = status;
        }
        env
    };
    delete(&client, &name).await;
    let created = apply_raw(&client, &env("example.invalid/app:1", None))
        .await
        .expect("created");
    assert_eq!(created.metadata.generation, Some(1));

    // As the operator writes it: server-side apply on the status subresource.
    let status = json!({"observedGeneration": 1, "phase": "Ready",
        "url": "https://status.example.com", "image": "example.invalid/app:1"});
    api.patch_status(
        &name,
        &PatchParams::apply(OPERATOR_MANAGER).force(),
        &Patch::Apply(
            json!({"apiVersion": "appenv.dev/v1alpha1", "kind": "AppEnvironment",
            "status": status}),
        ),
    )
    .await
    .expect("status written");
    let read = api.get(&name).await.expect("read back");
    let read_status = serde_json::to_value(read.status.as_ref().expect("a status")).expect("json");
    contains(&read_status, &status, "status").expect("the status as written");
    assert_eq!(read.metadata.generation, Some(1), "status is not the spec");

    // A status sent with the object itself is ignored; the spec change is not.
    let changed = apply_raw(
        &client,
        &env(
            "example.invalid/app:2",
            Some(json!({"phase": "Degraded", "url": "https://elsewhere.example.com"})),
        ),
    )
    .await
    .expect("spec applied");
    assert_eq!(changed.spec.image, "example.invalid/app:2");
    assert_eq!(changed.metadata.generation, Some(2));
    let kept = serde_json::to_value(changed.status.as_ref().expect("a status")).expect("json");
    contains(&kept, &status, "status").expect("the status is the one written through /status");
    delete(&client, &name).await;
}

async fn printer_columns_are_served_through_the_table_api(server: Server) {
    let client = server.client().await;
    let _exclusive = server.exclusive().await;
    install_current(&client).await;
    let name = server.name("table");
    let mut example = raw_example("flask-react-template-preview.yaml");
    example["metadata"] = json!({"name": name});
    delete(&client, &name).await;
    apply_raw(&client, &example).await.expect("applied");
    environments(&client)
        .patch_status(
            &name,
            &PatchParams::apply(OPERATOR_MANAGER).force(),
            &Patch::Apply(
                json!({"apiVersion": "appenv.dev/v1alpha1", "kind": "AppEnvironment",
                "status": {"phase": "Progressing", "url": "https://pr.example.com"}}),
            ),
        )
        .await
        .expect("status written");
    let object =
        serde_json::to_value(environments(&client).get(&name).await.expect("read")).expect("json");

    let mut request = kube::core::Request::new("/apis/appenv.dev/v1alpha1/appenvironments")
        .get(&name, &GetParams::default())
        .expect("request");
    request
        .headers_mut()
        .insert("accept", TABLE.parse().expect("header value"));
    let table: Value =
        serde_json::from_str(&client.request_text(request).await.expect("Table")).expect("json");
    assert_eq!(table["kind"], "Table", "{table}");

    let columns = crd().spec.versions[0]
        .additional_printer_columns
        .clone()
        .expect("printer columns");
    let names: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let expected: Vec<&str> = std::iter::once("Name")
        .chain(columns.iter().map(|c| c.name.as_str()))
        .collect();
    assert_eq!(names, expected);

    let cells = table["rows"][0]["cells"].as_array().expect("one row");
    assert_eq!(cells[0], json!(name));
    for (column, cell) in columns.iter().zip(&cells[1..]) {
        if column.type_ == "date" {
            assert!(cell.as_str().is_some_and(|age| !age.is_empty()), "{cell}");
            continue;
        }
        let mut value = &object;
        for key in column.json_path.trim_start_matches('.').split('.') {
            value = &value[key];
        }
        assert!(
            !value.is_null(),
            "{}: nothing at {}",
            column.name,
            column.json_path
        );
        assert_eq!(cell, value, "column {}", column.name);
    }
    delete(&client, &name).await;
}

#[tokio::test]
async fn kubectl_explain_prints_the_field_descriptions_on_the_current_server() {
    let server = crd_server::shared();
    let client = Server::Current.client().await;
    let _exclusive = Server::Current.exclusive().await;
    install_current(&client).await;

    let schema = serde_json::to_value(crd().spec.versions[0].schema.clone()).expect("schema");
    let web = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["web"];
    let words = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut wanted = vec![words(
        web["description"].as_str().expect("web has a description"),
    )];
    for (field, property) in web["properties"].as_object().expect("web's fields") {
        wanted.push(field.clone());
        if let Some(description) = property["description"].as_str() {
            // kubectl prints the first line of each field's description.
            wanted.push(words(description.lines().next().unwrap_or_default()));
        }
    }
    assert!(wanted.len() > 10, "{wanted:?}");

    // Discovery and the OpenAPI of a new CRD are published shortly after it is Established.
    let cache = tempfile::tempdir().expect("kubectl cache dir");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let output = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(server.kubeconfig())
            .arg("--cache-dir")
            .arg(cache.path())
            .args(["explain", "appenvironment.spec.web"])
            .output()
            .expect("kubectl runs");
        let printed = words(&String::from_utf8_lossy(&output.stdout));
        let missing: Vec<&String> = wanted.iter().filter(|w| !printed.contains(*w)).collect();
        if output.status.success() && missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl explain: {}\nmissing: {missing:#?}\nprinted: {printed}",
            String::from_utf8_lossy(&output.stderr)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn the_previous_crd_is_replaced_without_loss(server: Server) {
    let client = server.client().await;
    let cel = enforces_cel(&client).await;
    let _exclusive = server.exclusive().await;
    let previous = crd_from_yaml(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crd-previous.yaml"),
        )
        .expect("the previous CRD"),
    );
    let previous = if cel {
        previous
    } else {
        without_cel(&previous)
    };
    install(&client, &previous).await;

    // Objects made under the previous CRD: every valid example as it was then (the fixture's
    // examples, refreshed with it), one with a status.
    let mut before = BTreeMap::new();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/previous-examples");
    let mut files: Vec<String> = std::fs::read_dir(&fixtures)
        .expect("previous examples")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    files.sort();
    assert_eq!(files.len(), examples(false).len(), "one per valid example");
    for file in files {
        let mut example: Value = serde_norway::from_str(
            &std::fs::read_to_string(fixtures.join(&file)).expect("previous example"),
        )
        .expect("YAML");
        let name = server.name(&format!("upgrade-{}", file.trim_end_matches(".yaml")));
        example["metadata"]["name"] = json!(name);
        delete(&client, &name).await;
        let stored = apply_raw(&client, &example)
            .await
            .unwrap_or_else(|e| panic!("{file} under the previous CRD: {e}"));
        before.insert(name, stored);
    }
    let with_status = before.keys().next().expect("an object").clone();
    let written = environments(&client)
        .patch_status(
            &with_status,
            &PatchParams::apply(OPERATOR_MANAGER).force(),
            &Patch::Apply(
                json!({"apiVersion": "appenv.dev/v1alpha1", "kind": "AppEnvironment",
                "status": {"observedGeneration": 1, "phase": "Ready"}}),
            ),
        )
        .await
        .expect("status written");
    before.insert(with_status.clone(), written);

    // The operator's start-up installs the current CRD over it.
    install_current(&client).await;

    let settings = Settings {
        preview_domain: Some("preview.example.com".parse().expect("domain")),
        ..Settings::default()
    };
    for (name, old) in &before {
        // Still there, and readable as the current types.
        let now = environments(&client)
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{name} after the upgrade: {e}"));
        assert_eq!(now.spec, old.spec, "{name}: spec");
        assert_eq!(now.status, old.status, "{name}: status");
        assert_eq!(
            now.metadata.uid, old.metadata.uid,
            "{name}: the same object"
        );
        // Valid under the current CRD: created afresh, every rule applies (a dry run).
        let mut copy = AppEnvironment::new(&format!("{name}-copy"), now.spec.clone());
        copy.metadata.labels = now.metadata.labels.clone();
        environments(&client)
            .create(
                &PostParams {
                    dry_run: true,
                    ..PostParams::default()
                },
                &copy,
            )
            .await
            .unwrap_or_else(|e| panic!("{name} is invalid under the current CRD: {e}"));
        // And valid for the operator.
        appenv_core::validate::validate(&now, &settings)
            .unwrap_or_else(|e| panic!("{name}: appenv's validation: {e}"));
    }
    assert!(
        before.values().any(|e| e.status.is_some()),
        "a status was carried over"
    );
    for name in before.keys() {
        delete(&client, name).await;
    }
}

/// A CRD server of its own (not the shared one): it lives in `/tmp/appenv-cp-<our pid>-*`, where
/// `.ci/run`'s leak check looks, and dropping it stops etcd and the server and removes that.
#[tokio::test]
async fn a_dropped_crd_server_stops_its_processes_and_removes_its_files() {
    let server = crd_server::CrdServer::start()
        .await
        .expect("a CRD server starts");
    let dir = server
        .kubeconfig()
        .parent()
        .expect("its directory")
        .to_owned();
    let prefix = format!("appenv-cp-{}-", std::process::id());
    assert!(
        dir.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(&prefix)),
        "{}",
        dir.display()
    );
    let pids = server.pids();
    assert_eq!(pids.len(), 2, "etcd and the CRD server");
    let alive = |pid: &u32| Path::new(&format!("/proc/{pid}")).exists();
    assert!(pids.iter().all(alive));
    let client = server.client().await.expect("client");
    assert!(client.apiserver_version().await.is_ok());

    drop(server);
    // Drop waits for both processes to exit and reaps them: nothing is left to poll for.
    let left: Vec<u32> = pids.iter().copied().filter(alive).collect();
    assert!(left.is_empty(), "still running: {left:?}");
    assert!(!dir.exists(), "{} is left", dir.display());
}
