//! `appenv render -f FILE`: every child of each AppEnvironment in FILE as multi-document YAML,
//! ordered to apply cleanly, like `helm template`. Invalid input lists every violation.

use crate::cli::settings::SettingsArgs;
use anyhow::Context as _;
use appenv_api::manifest;
use appenv_core::build::{self, ClusterApis, Inputs};
use appenv_core::settings::Settings;
use appenv_core::validate;
use serde_json::{Map, Value};
use std::io::Write as _;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// AppEnvironment file (YAML, one or more documents); `-` reads standard input.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Also generate the database password (random: the output is then not reproducible).
    /// Without it the credentials Secret omits `password` and `url`, which the operator
    /// generates once.
    #[arg(long)]
    pub with_credentials: bool,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// The rendered YAML, or every violation as `FILE: [document N: ]path: message` lines.
pub fn render(
    text: &str,
    source: &str,
    settings: &Settings,
    with_credentials: bool,
) -> Result<String, Vec<String>> {
    let documents = manifest::parse_numbered(text);
    let many = documents.len() > 1;
    let at = |n: usize| {
        if many {
            format!("{source}: document {n}: ")
        } else {
            format!("{source}: ")
        }
    };
    let mut out = String::new();
    let mut problems = Vec::new();
    if documents.is_empty() {
        problems.push(format!("{source}: no AppEnvironment found"));
    }
    for (number, document) in documents {
        let env = match document {
            Ok(env) => env,
            Err(err) => {
                problems.extend(
                    err.errors
                        .iter()
                        .map(|e| format!("{}{e}", at(err.document))),
                );
                continue;
            }
        };
        match validate::validate(&env, settings) {
            Ok(model) => {
                let password = match with_credentials
                    .then(appenv_controller::secrets::generate_password)
                    .transpose()
                {
                    Ok(password) => password,
                    Err(err) => {
                        problems.push(format!("{}cannot generate credentials: {err}", at(number)));
                        continue;
                    }
                };
                let ctx = Inputs {
                    owner: None,
                    postgres_password: password,
                    workload_image: None,
                    wildcard_tls: None,
                    // Copies hold what the cluster's source objects hold: nothing offline.
                    copies: Vec::new(),
                    // No cluster to ask: what a current one serves without KEDA.
                    cluster: ClusterApis::OFFLINE,
                    // Backup Jobs are started by the controller when they are due.
                    backup: None,
                    stop_web: false,
                    stop_workers: false,
                    restore: None,
                    seed: false,
                };
                for object in build::build(&model, &ctx).objects() {
                    out.push_str("---\n");
                    out.push_str(&to_yaml(&object));
                }
            }
            Err(invalid) => problems.extend(invalid.0.iter().map(|e| format!("{}{e}", at(number)))),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

pub fn run(args: RenderArgs) -> anyhow::Result<bool> {
    let (text, source) = if args.file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading standard input")?;
        (text, "<stdin>".to_owned())
    } else {
        let text = std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?;
        (text, args.file.display().to_string())
    };
    match render(
        &text,
        &source,
        &args.settings.to_settings(),
        args.with_credentials,
    ) {
        Ok(yaml) => {
            std::io::stdout()
                .write_all(yaml.as_bytes())
                .context("writing standard output")?;
            Ok(true)
        }
        Err(problems) => {
            eprintln!("error: {} is not a valid AppEnvironment:", source);
            for problem in &problems {
                eprintln!("  {problem}");
            }
            Ok(false)
        }
    }
}

// The output is read by kubectl, whose YAML library (sigs.k8s.io/yaml) follows YAML 1.1: there
// a plain `no`, `on`, `y`, `0755`, `1_000` or `1:20` is a boolean or a number, so the API
// server rejects it where the object has a string. serde_norway quotes only by YAML 1.2 rules
// and has no setting for 1.1, hence this small emitter: block style like serde_norway's, and
// every string plain only when both YAML 1.1 and 1.2 readers take it back as that string.

/// One object as a YAML document body (without the `---` line).
fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_mapping(&mut out, map, 0, false),
        Value::Array(items) if !items.is_empty() => write_sequence(&mut out, items, 0, false),
        scalar => write_scalar(&mut out, scalar, 2),
    }
    out
}

fn indent_to(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// `inline`: the first entry goes on the current line, after a sequence's `- `.
fn write_mapping(out: &mut String, map: &Map<String, Value>, indent: usize, inline: bool) {
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 || !inline {
            indent_to(out, indent);
        }
        // An annotation or ConfigMap key can be `on` or `1` too; a key is never a block scalar.
        write_flow_string(out, key);
        out.push(':');
        match value {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                write_mapping(out, inner, indent + 2, false);
            }
            // Items at the key's own indentation, as serde_norway and kubectl print them.
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                write_sequence(out, items, indent, false);
            }
            scalar => {
                out.push(' ');
                write_scalar(out, scalar, indent + 2);
            }
        }
    }
}

fn write_sequence(out: &mut String, items: &[Value], indent: usize, inline: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !inline {
            indent_to(out, indent);
        }
        out.push_str("- ");
        match item {
            Value::Object(inner) if !inner.is_empty() => {
                write_mapping(out, inner, indent + 2, true)
            }
            Value::Array(inner) if !inner.is_empty() => {
                write_sequence(out, inner, indent + 2, true)
            }
            scalar => write_scalar(out, scalar, indent + 2),
        }
    }
}

/// A scalar or an empty collection, then the line break; `indent` is a block scalar's.
fn write_scalar(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) if is_literal_block_safe(s) => {
            // Scripts and config files stay readable; the chomping indicator keeps whether
            // the text ends with its line break.
            out.push_str(if s.ends_with('\n') { "|\n" } else { "|-\n" });
            for line in s.strip_suffix('\n').unwrap_or(s).split('\n') {
                if !line.is_empty() {
                    indent_to(out, indent);
                    out.push_str(line);
                }
                out.push('\n');
            }
            return;
        }
        Value::String(s) => write_flow_string(out, s),
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
    }
    out.push('\n');
}

/// `s` on one line: plain if unambiguous, else single-quoted, else double-quoted with escapes.
fn write_flow_string(out: &mut String, s: &str) {
    if is_plain_safe(s) {
        out.push_str(s);
    } else if s.chars().all(|c| c != '\t' && is_printable_inline(c)) {
        // Single quotes escape nothing but `'`: a line break in them would fold into a space,
        // so those strings (and tabs, clearer as `\t`) take double quotes.
        out.push('\'');
        out.push_str(&s.replace('\'', "''"));
        out.push('\'');
    } else {
        write_double_quoted(out, s);
    }
}

fn write_double_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            // `\u` is the escape YAML 1.1, YAML 1.2 and JSON share.
            c if !is_printable_inline(c) => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Printable in YAML (1.1 and 1.2), and not a line break in either: YAML 1.1 also breaks
/// lines at NEL, LS and PS. A byte-order mark is printable but some readers drop it.
fn is_printable_inline(c: char) -> bool {
    matches!(c, '\t' | ' '..='~')
        || (c >= '\u{A0}'
            && !matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{FEFF}' | '\u{FFFE}' | '\u{FFFF}'
            ))
}

/// A literal block (`|`) reads back exactly given a line break, no trailing whitespace (editors
/// and libyaml strip it), a first line without leading whitespace (it sets the indentation),
/// and at most one final line break (`|` keeps one, `|-` none).
fn is_literal_block_safe(s: &str) -> bool {
    let body = s.strip_suffix('\n').unwrap_or(s);
    s.contains('\n')
        && !body.ends_with('\n')
        // Also rules out an empty body, which `|` would read back without its line break.
        && body.starts_with(|c: char| !matches!(c, ' ' | '\t' | '\n'))
        && body
            .split('\n')
            .all(|line| !line.ends_with([' ', '\t']) && line.chars().all(is_printable_inline))
}

/// Whether `s` may be written unquoted: the same string to YAML 1.1 (kubectl, PyYAML) and 1.2
/// (serde_norway) readers, in block context, as a value or a key. Deliberately conservative: a
/// string that merely looks like a number or a keyword is quoted even where it would survive.
fn is_plain_safe(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false; // the empty plain scalar is null
    };
    // Indicators (`-`, `?`, `:`, `&`, `*`, `!`, `|`, `>`, `%`, `@`, quotes, ...) may not start
    // a plain scalar; `-` may when a non-space follows (`--appendonly`), unlike `- x`.
    let first_ok = first.is_ascii_alphanumeric()
        || matches!(first, '/' | '.' | '_' | '$' | '(')
        || (first == '-' && chars.next().is_some_and(|c| c != ' '))
        || (!first.is_ascii() && is_printable_inline(first));
    // No flow indicators, `#` (a comment after a space), quotes, backslashes or tabs, so that
    // whatever remains means nothing to any reader.
    let rest_ok = s.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || " -_./:@+=%?&~(),;*$!^<>|".contains(c)
            || (!c.is_ascii() && is_printable_inline(c))
    });
    first_ok
        && rest_ok
        && !s.ends_with([' ', ':'])
        && !s.contains(": ")
        && !s.starts_with("---")
        && !s.starts_with("...")
        && !resolves_to_non_string(s)
}

/// YAML 1.1's booleans and nulls in any capitalisation (1.1 lists `yes`, `Yes`, `YES`; Go's
/// reader also takes `y` and `n`), and anything that could be a number in any base, with `_`
/// separators, sexagesimal (`1:20`), a timestamp (`2001-12-14`), or `.inf`/`.nan`.
fn resolves_to_non_string(s: &str) -> bool {
    const KEYWORDS: [&str; 10] = [
        "y", "n", "yes", "no", "true", "false", "on", "off", "null", "~",
    ];
    let lower = s.to_ascii_lowercase();
    if KEYWORDS.contains(&lower.as_str()) {
        return true;
    }
    let unsigned = lower.strip_prefix(['+', '-']).unwrap_or(&lower);
    if matches!(unsigned, "inf" | "infinity" | "nan" | ".inf" | ".nan") {
        return true;
    }
    // Digits, hexadecimal digits, the base prefixes `0x` `0o` `0b`, Go's hexadecimal float
    // exponent `p`, separators, signs and exponents, and a timestamp's `t`, `z` and spaces.
    // This quotes `0.0.0.0` too (YAML 1.1's float pattern allows `[0-9.]*` after the point),
    // and every hexadecimal hash, so a config hash is quoted always, not only when all digits.
    unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && unsigned
            .chars()
            .all(|c| c.is_ascii_hexdigit() || "xobptz._:+- ".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Strings YAML 1.1 (kubectl's reader, PyYAML) resolves to a boolean, null, number or
    /// timestamp when they are plain, though YAML 1.2 keeps many of them strings.
    const AMBIGUOUS: &[&str] = &[
        "y",
        "Y",
        "yes",
        "Yes",
        "YES",
        "n",
        "N",
        "no",
        "No",
        "NO",
        "on",
        "On",
        "ON",
        "off",
        "Off",
        "OFF",
        "true",
        "True",
        "TRUE",
        "false",
        "False",
        "FALSE",
        "~",
        "null",
        "Null",
        "NULL",
        "",
        "0",
        "1",
        "-1",
        "+1",
        "0755",
        "0o17",
        "0x1F",
        "0X1f",
        "0b1010",
        "1_000",
        "-1_000",
        "1:20",
        "190:20:30",
        "-1:20",
        "1e3",
        "1E3",
        "1e+3",
        "1.",
        ".5",
        "1.5",
        "-.5",
        "1_000.5",
        "6.8523015e+5",
        "190:20:30.15",
        ".inf",
        ".Inf",
        ".INF",
        "+.inf",
        "-.inf",
        ".nan",
        ".NaN",
        ".NAN",
        "inf",
        "-Infinity",
        "nan",
        "0x1p-2",
        "2001-12-14",
        "2001-12-14t21:59:43.10-05:00",
        "2001-12-14 21:59:43.10 -5",
        "=",
        "<<",
        "-",
        "- x",
        "?",
        ":",
        "a:",
        "a: b",
        "a #b",
        "#x",
        " x",
        "x ",
        "'x'",
        "\"x\"",
        "[x]",
        "{x}",
        "&x",
        "*x",
        "!x",
        "|",
        ">",
        "%x",
        "@x",
        "`x",
        "---",
        "...",
        "a\tb",
        "a\\b",
        "tab\t",
        "nel\u{85}",
        "ls\u{2028}",
        "\u{FEFF}bom",
        "del\u{7F}",
        "bell\u{7}",
        "two\n\nbreaks\n\n",
        " leading\nspace",
        "trailing \nspace",
        "cr\r\nlf",
        "\n",
    ];

    /// Strings every reader takes back as themselves, which should stay plain to be readable.
    const ORDINARY: &[&str] = &[
        "redis",
        "--appendonly",
        "--save",
        "--bind=0.0.0.0:8000",
        "ghcr.io/acme/app:v1.2.3",
        "ghcr.io/acme/app@sha256:0123abcd",
        "redis://t7e-redis:6379/0",
        "postgresql://user@db:5432/app?sslmode=require&x=1",
        "/data/ledger.duckdb",
        "256Mi",
        "100m",
        "1Gi",
        "app.kubernetes.io/name",
        "gunicorn app:app",
        "project:create_app()",
        "Recreate",
        "RuntimeDefault",
        "yesterday",
        "none",
        "café",
        "$(REDIS_URL)",
        "_private",
    ];

    fn round_trip(yaml: &str) -> Value {
        serde_norway::from_str(yaml).expect("the output is YAML")
    }

    /// The text after `- ` on each line: how each item was written.
    fn items(yaml: &str) -> Vec<&str> {
        yaml.lines().filter_map(|l| l.strip_prefix("- ")).collect()
    }

    fn is_quoted(scalar: &str) -> bool {
        scalar.starts_with(['\'', '"'])
    }

    fn read_example(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        std::fs::read_to_string(path.join(name)).expect("example")
    }

    #[test]
    fn the_redis_no_argument_is_quoted_in_a_real_render() {
        let text = read_example("t7e.yaml");
        let yaml = render(&text, "t7e.yaml", &Settings::default(), false).expect("renders");
        let args: Vec<&str> = yaml.lines().map(str::trim_start).collect();
        let at = args
            .iter()
            .position(|l| *l == "- --appendonly")
            .expect("the Redis Deployment has --appendonly");
        assert_eq!(args[at + 1], "- 'no'", "{yaml}");
        // `--save ""` (no snapshots) was quoted already; it still must be.
        assert!(args.contains(&"- ''"), "{yaml}");
        assert!(!args.contains(&"- no"), "{yaml}");
    }

    #[test]
    fn yaml_1_1_ambiguous_strings_are_quoted_and_read_back() {
        let list: Vec<Value> = AMBIGUOUS.iter().map(|s| json!(s)).collect();
        let yaml = to_yaml(&json!(list));
        assert_eq!(round_trip(&yaml), json!(list), "{yaml}");
        let written = items(&yaml);
        for (string, scalar) in AMBIGUOUS.iter().zip(&written) {
            // A multi-line string that reads back exactly may be a literal block instead.
            assert!(
                is_quoted(scalar) || scalar.starts_with('|') && string.contains('\n'),
                "{string:?} written as {scalar:?}"
            );
        }
        // As keys (annotations, ConfigMap data) and as values of a mapping.
        let map: Map<String, Value> = AMBIGUOUS
            .iter()
            .map(|s| (s.to_string(), json!(s)))
            .collect();
        let yaml = to_yaml(&Value::Object(map.clone()));
        assert_eq!(round_trip(&yaml), Value::Object(map), "{yaml}");
        for line in yaml
            .lines()
            .filter(|l| !l.starts_with(' ') && !l.is_empty())
        {
            assert!(is_quoted(line), "key written as {line:?}");
        }
    }

    #[test]
    fn an_ambiguous_env_value_in_a_spec_is_quoted() {
        let text = read_example("dojo.yaml").replacen(
            "  env:\n",
            "  env:\n    - {name: FEATURE, value: 'on'}\n    - {name: UMASK, value: '0755'}\n",
            1,
        );
        let yaml = render(&text, "dojo.yaml", &Settings::default(), false).expect("renders");
        let lines: Vec<&str> = yaml.lines().map(str::trim_start).collect();
        let value_of = |name: &str| {
            let at = lines.iter().position(|l| *l == format!("- name: {name}"));
            at.map(|at| lines[at + 1])
        };
        assert_eq!(value_of("FEATURE"), Some("value: 'on'"), "{yaml}");
        assert_eq!(value_of("UMASK"), Some("value: '0755'"), "{yaml}");
    }

    #[test]
    fn ordinary_strings_stay_plain() {
        let list: Vec<Value> = ORDINARY.iter().map(|s| json!(s)).collect();
        let yaml = to_yaml(&json!(list));
        assert_eq!(items(&yaml), ORDINARY, "{yaml}");
        assert_eq!(round_trip(&yaml), json!(list));
    }

    #[test]
    fn the_layout_is_serde_norways_block_style() {
        let object = json!({
            "kind": "Deployment",
            "metadata": {"labels": {"app": "x"}, "annotations": {}},
            "spec": {
                "replicas": 1,
                "paused": false,
                "containers": [{"name": "redis", "args": ["--appendonly", "no"], "env": []}],
                "nested": [["a", "b"], [{"k": null}]],
                "script": "set -e\nalembic upgrade head\n",
                "sql": "CREATE EXTENSION IF NOT EXISTS \"vector\";\n",
                "untrimmed": "first\n\n  indented\nlast",
            },
        });
        let yaml = to_yaml(&object);
        let expected = r#"kind: Deployment
metadata:
  annotations: {}
  labels:
    app: x
spec:
  containers:
  - args:
    - --appendonly
    - 'no'
    env: []
    name: redis
  nested:
  - - a
    - b
  - - k: null
  paused: false
  replicas: 1
  script: |
    set -e
    alembic upgrade head
  sql: |
    CREATE EXTENSION IF NOT EXISTS "vector";
  untrimmed: |-
    first

      indented
    last
"#;
        assert_eq!(yaml, expected);
        assert_eq!(round_trip(&yaml), object);
    }

    proptest! {
        /// Whatever the characters, keys and values read back unchanged.
        #[test]
        fn any_string_reads_back(s in any::<String>(), lines in prop::collection::vec("[ a-z\t#:'-]{0,6}", 0..4)) {
            let multi = lines.join("\n");
            let object = json!({ s.clone(): [s.clone(), multi.clone()], multi.clone(): {"k": s} });
            let yaml = to_yaml(&object);
            prop_assert_eq!(round_trip(&yaml), object, "{}", yaml);
        }
    }
}
