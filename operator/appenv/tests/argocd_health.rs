//! The Argo CD health check `config/argocd/health.lua`, run by Debian's Lua 5.1 interpreter
//! (`lua5.1`, the language Argo CD's gopher-lua implements; `.ci/run` installs it) on every
//! sample of `config/argocd/testdata/`, each expected result listed in
//! `config/argocd/health_test.yaml` (the layout of Argo CD's own resource customizations).
//! The script gets only the object and Lua's base, string, table and math functions, as in
//! Argo CD's sandbox.

use appenv_api::{AppEnvironment, Phase};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn argocd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/argocd")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthTests {
    tests: Vec<HealthTest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HealthTest {
    input_path: String,
    health_status: HealthStatus,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct HealthStatus {
    status: String,
    message: String,
}

fn health_tests() -> HealthTests {
    let path = argocd_dir().join("health_test.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn sample(input_path: &str) -> Value {
    let path = argocd_dir().join(input_path);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// A Lua string literal of `text`: every byte but plain printable ASCII as a decimal escape.
fn lua_string(text: &str) -> String {
    let mut out = String::from("\"");
    for byte in text.bytes() {
        if byte.is_ascii_graphic() && byte != b'"' && byte != b'\\' || byte == b' ' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("\\{byte:03}"));
        }
    }
    out.push('"');
    out
}

/// The Lua table Argo CD makes of a JSON value: objects and arrays (1-based) as tables, null
/// as nil (so a key whose value is null is absent), numbers as numbers.
fn lua_value(value: &Value) -> String {
    match value {
        Value::Null => "nil".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => format!("{:?}", n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => lua_string(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua_value).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_value(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

/// Run health.lua on `object` as Argo CD does (the object as the global `obj`, the script's
/// returned table as the result), in an environment of only the base, string, table and math
/// functions: status and message.
fn health(object: &Value) -> HealthStatus {
    let script = argocd_dir().join("health.lua");
    let runner = format!(
        r#"local chunk = assert(loadfile({path}))
local sandbox = {{obj = {object}, string = string, table = table, math = math}}
for _, name in ipairs({{"assert", "error", "ipairs", "next", "pairs", "pcall", "select",
    "tonumber", "tostring", "type", "unpack"}}) do
  sandbox[name] = _G[name]
end
setfenv(chunk, sandbox)
local hs = chunk()
assert(type(hs) == "table", "the script returned " .. type(hs))
assert(type(hs.status) == "string", "no status")
assert(type(hs.message) == "string", "no message")
io.write(hs.status, "\n", hs.message)
"#,
        path = lua_string(script.to_str().expect("UTF-8 path")),
        object = lua_value(object),
    );
    let mut child = Command::new("lua5.1")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("lua5.1: {e}; this test needs Debian's Lua 5.1 (apt-get install lua5.1; .ci/run installs it)")
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(runner.as_bytes())
        .expect("write the runner");
    let out = child.wait_with_output().expect("lua5.1 output");
    assert!(
        out.status.success(),
        "lua5.1 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let (status, message) = text.split_once('\n').expect("status, newline, message");
    HealthStatus {
        status: status.to_owned(),
        message: message.to_owned(),
    }
}

#[test]
fn the_health_check_gives_the_expected_status_for_every_sample() {
    let mut failures = Vec::new();
    for test in health_tests().tests {
        let got = health(&sample(&test.input_path));
        if got != test.health_status {
            failures.push(format!(
                "{}: expected {:?}, got {got:?}",
                test.input_path, test.health_status
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_samples_cover_every_phase_and_a_stale_status_and_are_real_objects() {
    let tests = health_tests().tests;
    let listed: BTreeSet<String> = tests.iter().map(|t| t.input_path.clone()).collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(argocd_dir().join("testdata"))
        .expect("testdata/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".yaml"))
        .map(|name| format!("testdata/{name}"))
        .collect();
    assert_eq!(listed, on_disk, "every sample has an expected result");

    let mut phases = BTreeSet::new();
    let mut stale = false;
    for test in &tests {
        let object = sample(&test.input_path);
        let phase = object["status"]["phase"].as_str().and_then(Phase::parse);
        if let Some(phase) = phase {
            // A sample with a phase appenv writes is an object the operator could have written.
            let parsed: Result<AppEnvironment, _> = serde_json::from_value(object.clone());
            assert!(parsed.is_ok(), "{}: {parsed:?}", test.input_path);
            let generation = object["metadata"]["generation"].as_i64();
            let observed = object["status"]["observedGeneration"].as_i64();
            if observed < generation {
                stale = true;
                assert_eq!(test.health_status.status, "Progressing", "{test:?}");
            } else {
                phases.insert(phase);
            }
        }
    }
    let missing: Vec<&Phase> = Phase::ALL.iter().filter(|p| !phases.contains(p)).collect();
    assert!(missing.is_empty(), "no current sample of {missing:?}");
    assert!(stale, "no sample whose observedGeneration is behind");
}

#[test]
fn a_lua_literal_keeps_every_character_and_a_null_is_absent() {
    let message = "quote\" back\\slash\nnewline \u{e9} \0 end";
    let ready = serde_json::json!({
        "metadata": {"generation": 2},
        "status": {"observedGeneration": 2, "phase": "Ready",
            "conditions": [{"type": "Ready", "status": "True", "message": message}]},
    });
    assert!(!lua_value(&ready).contains('\n'));
    let got = health(&ready);
    assert_eq!(
        (got.status.as_str(), got.message.as_str()),
        ("Healthy", message)
    );

    let unobserved = serde_json::json!({
        "metadata": {"generation": 2},
        "status": {"observedGeneration": null, "phase": "Ready"},
    });
    let got = health(&unobserved);
    assert_eq!(got.status, "Progressing", "{got:?}");
    assert!(
        got.message.ends_with("(the status describes none)"),
        "{got:?}"
    );
}
