//! `appenv preview up|down|list`: one environment per pull request, for CI and for people.
//! Also usable as `kubectl appenv preview ...` when installed as `kubectl-appenv`.

use anyhow::{Context as _, bail};
use appenv_api::manifest;
use appenv_api::names::{Component, Reason, label};
use appenv_api::{AppEnvironment, AppEnvironmentStatus, Phase, condition};
use appenv_core::settings::{Settings, parse_duration};
use appenv_core::validate;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod set_path;

const FIELD_MANAGER: &str = "appenv-preview";
/// The Secret `--data-from` reads the source's bucket with unless `--data-credentials` (or the
/// base file's `spec.database.restore.credentialsSecret`) names another.
pub const RESTORE_CREDENTIALS: &str = "appenv-restore-credentials";
pub const PREVIEW_LABEL: &str = "appenv.dev/preview";
pub const APP_LABEL: &str = "appenv.dev/app";
pub const PR_LABEL: &str = "appenv.dev/pull-request";

#[derive(Debug, clap::Subcommand)]
pub enum PreviewCommand {
    /// Create or update the preview of a pull request; with --wait, until it is Ready.
    Up(Box<UpArgs>),
    /// Delete the preview of a pull request; with --wait, until its namespace is gone.
    Down(DownArgs),
    /// List previews.
    List(ListArgs),
    /// Put a preview to sleep now (every component at zero, volumes kept); the next request to
    /// its host (through the activator) or `wake` wakes it.
    Sleep(crate::cli::sleep::SleepArgs),
    /// Wake a sleeping preview, as a request to its host would.
    Wake(crate::cli::sleep::SleepArgs),
}

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Application name (the base file's `spec.app`).
    #[arg(long)]
    pub app: String,
    /// Pull request number.
    #[arg(long)]
    pub pr: u32,
    /// Image to run, e.g. ghcr.io/org/app:pr-12-3f2c1d9.
    #[arg(long)]
    pub image: String,
    /// AppEnvironment to start from (e.g. the app's production file); its Ingress host and
    /// data deletion policy are dropped: a preview gets its own host and its data goes with it.
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// Set a spec field, e.g. `web.replicas=1`; a list item by its index, as `workers.0.replicas=2`
    /// or `workers[0].replicas=2` (repeatable). A path the spec does not have, an index past the
    /// end of a list or a field of a scalar is an error, and so is a resulting spec that is not
    /// valid: nothing is sent to the cluster then.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<String>,
    /// Delete the preview this long after its last update, e.g. 72h.
    #[arg(long)]
    pub ttl: Option<String>,
    /// Start the preview's database from a backup of this AppEnvironment (e.g. production):
    /// sets spec.database.restore. The preview's spec needs spec.database (postgres or
    /// embedded, the engine of ENV's), and ENV's spec.backup.restoreTo must name the preview
    /// (e.g. `APP-pr-*`). Before anything of the app starts, the operator restores the backup,
    /// then runs the --seed command, then the migration; --wait shows which step runs.
    #[arg(long, value_name = "ENV", group = "data")]
    pub data_from: Option<String>,
    /// Start the preview's database from a dump at this URL instead (`https://`, or `http://`
    /// with --data-sha256): for PostgreSQL a `pg_dump --format=custom` archive, for an embedded
    /// database the SQLite or DuckDB file. The restore Job downloads it; a URL with credentials
    /// in its query (a presigned URL) belongs in a Secret (spec.database.restore.fromUrl.urlSecret
    /// in the base file), since the spec is readable by whoever reads AppEnvironments.
    #[arg(long, value_name = "URL", group = "data")]
    pub data_url: Option<String>,
    /// The dump's SHA-256 (64 hex digits): a dump that differs is not restored.
    #[arg(long, value_name = "HEX", requires = "data_url")]
    pub data_sha256: Option<String>,
    /// The backup of --data-from to start from: `latest` (default) or an id as
    /// `appenv backup list ENV` prints it.
    #[arg(long, value_name = "ID|latest", requires = "data_from", value_parser = crate::cli::restore::backup_ref)]
    pub data_backup: Option<String>,
    /// The Secret in the preview's namespace with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
    /// that can read --data-from's bucket (a read-only key; ENV's own credentials never leave
    /// its namespace). The operator creates the preview's namespace, so the Secret is typically
    /// copied in: list it in the base file's spec.namespace.copy, from a namespace the operator
    /// copies from (its --copy-from-namespace). Default: appenv-restore-credentials, or the base
    /// file's spec.database.restore.credentialsSecret.
    #[arg(long, value_name = "SECRET", requires = "data_from")]
    pub data_credentials: Option<String>,
    /// The command run after the restore and before the migration, one argument per --seed
    /// (no shell splitting), e.g. `--seed flask --seed blank-personal-data`; the preview starts
    /// only if it succeeds. Default: the base file's spec.database.restore.seed, if any.
    #[arg(
        long = "seed",
        value_name = "ARG",
        requires = "data",
        allow_hyphen_values = true
    )]
    pub seed: Vec<String>,
    /// Wait until the preview is Ready (or has failed), printing progress.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, e.g. 10m.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, clap::Args)]
pub struct DownArgs {
    #[arg(long)]
    pub app: String,
    #[arg(long)]
    pub pr: u32,
    /// Wait until the preview's namespace is gone.
    #[arg(long)]
    pub wait: bool,
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this application's previews.
    #[arg(long)]
    pub app: Option<String>,
    /// `table` or `json`.
    #[arg(long, short = 'o', default_value = "table")]
    pub output: String,
}

pub fn preview_name(app: &str, pr: u32) -> String {
    format!("{app}-pr-{pr}")
}

/// The AppEnvironment of a pull request's preview.
pub fn preview_object(args: &UpArgs, base: Option<&str>) -> anyhow::Result<Value> {
    let mut spec = match base {
        Some(text) => {
            let env = manifest::parse(text)
                .into_iter()
                .next()
                .context("no AppEnvironment in the base file")?;
            let env = env.map_err(|e| {
                let lines: Vec<String> = e.errors.iter().map(ToString::to_string).collect();
                anyhow::anyhow!(
                    "the base file is not a valid AppEnvironment: {}",
                    lines.join("; ")
                )
            })?;
            if env.spec.app != args.app {
                bail!(
                    "--app {:?} does not match spec.app {:?} of the base file",
                    args.app,
                    env.spec.app
                );
            }
            serde_json::to_value(&env.spec)?
        }
        None => json!({"app": args.app}),
    };
    spec["app"] = json!(args.app);
    spec["image"] = json!(args.image);
    spec["profile"] = json!("Preview");
    // The namespace is the preview's own (`<app>-pr-<n>`); only the ways out of it and what is
    // copied into it are kept.
    if let Some(map) = spec.as_object_mut()
        && let Some(Value::Object(mut namespace)) = map.remove("namespace")
    {
        namespace.retain(|field, _| field == "egress" || field == "copy");
        if !namespace.is_empty() {
            map.insert("namespace".to_owned(), Value::Object(namespace));
        }
    }
    if let Some(ingress) = spec
        .pointer_mut("/web/ingress")
        .and_then(Value::as_object_mut)
    {
        ingress.remove("host");
    }
    if let Some(database) = spec.pointer_mut("/database").and_then(Value::as_object_mut) {
        database.remove("deletionPolicy");
    }
    let github = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
    let mut preview = json!({"pullRequest": args.pr});
    for (field, var) in [
        ("repository", "GITHUB_REPOSITORY"),
        ("branch", "GITHUB_HEAD_REF"),
        ("sha", "GITHUB_SHA"),
    ] {
        if let Some(value) = github(var) {
            preview[field] = json!(value);
        }
    }
    if let Some(ttl) = args.ttl.clone().or_else(|| {
        spec.pointer("/preview/ttl")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }) {
        preview["ttl"] = json!(ttl);
    }
    spec["preview"] = preview;
    if !args.set.is_empty() {
        let schema = set_path::spec_schema().context("the CRD has no schema for spec")?;
        let refused: Vec<String> = args
            .set
            .iter()
            .filter_map(|assignment| set_path::set(&mut spec, &schema, assignment).err())
            .map(|err| err.to_string())
            .collect();
        if !refused.is_empty() {
            bail!("{}", refused.join("\n"));
        }
    }
    if let Some(from) = &args.data_from {
        set_restore(&mut spec, &format!("--data-from {from}"), args)?;
    } else if let Some(url) = &args.data_url {
        set_restore(&mut spec, &format!("--data-url {}", shown_url(url)), args)?;
    }
    Ok(json!({
        "apiVersion": "appenv.dev/v1alpha1",
        "kind": "AppEnvironment",
        "metadata": {
            "name": preview_name(&args.app, args.pr),
            "labels": {PREVIEW_LABEL: "true", APP_LABEL: args.app, PR_LABEL: args.pr.to_string()},
        },
        "spec": spec,
    }))
}

/// `spec.database.restore` of `--data-from` (or `--data-url`): what the options say, the base
/// file's credentials Secret and seed where they say nothing.
fn set_restore(spec: &mut Value, option: &str, args: &UpArgs) -> anyhow::Result<()> {
    let Some(database) = spec.get_mut("database").and_then(Value::as_object_mut) else {
        bail!(
            "{option}: the preview's spec has no spec.database to restore into (set \
             spec.database.postgres or spec.database.embedded in the base file, --file)"
        );
    };
    if let Some(first) = args.seed.first()
        && first.contains(char::is_whitespace)
    {
        bail!(
            "--seed {first:?}: one argument per --seed, without shell splitting (e.g. --seed \
             flask --seed blank-personal-data)"
        );
    }
    let base = database
        .remove("restore")
        .and_then(|r| match r {
            Value::Object(map) => Some(map),
            _ => None,
        })
        .unwrap_or_default();
    let mut restore = serde_json::Map::new();
    if let Some(from) = &args.data_from {
        restore.insert("fromEnvironment".to_owned(), json!(from));
        restore.insert(
            "backup".to_owned(),
            json!(args.data_backup.as_deref().unwrap_or("latest")),
        );
        let credentials = args
            .data_credentials
            .clone()
            .map(Value::String)
            .or_else(|| base.get("credentialsSecret").cloned())
            .unwrap_or_else(|| json!(RESTORE_CREDENTIALS));
        restore.insert("credentialsSecret".to_owned(), credentials);
    } else if let Some(url) = &args.data_url {
        let mut dump = json!({"url": url});
        if let Some(sha) = &args.data_sha256 {
            dump["sha256"] = json!(sha);
        }
        restore.insert("fromUrl".to_owned(), dump);
    }
    let seed = if args.seed.is_empty() {
        base.get("seed").cloned()
    } else {
        Some(json!({"command": args.seed}))
    };
    if let Some(seed) = seed {
        restore.insert("seed".to_owned(), seed);
    }
    database.insert("restore".to_owned(), Value::Object(restore));
    Ok(())
}

/// A note when the preview restores with a credentials Secret that its spec does not copy into
/// its namespace: the restore Job cannot start until something else puts it there.
pub fn credentials_note(object: &Value) -> Option<String> {
    let restore = object.pointer("/spec/database/restore")?;
    let secret = restore.get("credentialsSecret")?.as_str()?;
    let copied = object
        .pointer("/spec/namespace/copy")
        .and_then(Value::as_array)
        .is_some_and(|copies| {
            copies.iter().any(|c| {
                c.get("name").and_then(Value::as_str) == Some(secret)
                    && c.get("kind").and_then(Value::as_str).unwrap_or("Secret") == "Secret"
            })
        });
    if copied {
        return None;
    }
    let from = restore
        .get("fromEnvironment")
        .and_then(Value::as_str)
        .unwrap_or("the source");
    Some(format!(
        "note: spec.namespace.copy copies no Secret {secret} into the preview's namespace: the \
         restore from {from} waits until it exists there (it needs AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY that can read {from}'s bucket)"
    ))
}

/// A note when `--data-from` is given for a preview that has run already without a restore:
/// `spec.database.restore` acts on an environment's first rollout only, so its data stays.
pub fn late_restore_note(existing: &AppEnvironment, from: &str) -> Option<String> {
    // `from` is what it would start from: "frt-prod's backup", "the dump at URL".
    let status = existing.status.as_ref()?;
    let initialized = status.restore.as_ref().is_some_and(|r| r.initialized);
    (status.image.is_some() && !initialized).then(|| {
        format!(
            "note: preview {} has run already: spec.database.restore acts on a first rollout \
             only, so its data stays as it is (`appenv preview down`, then `up` again, to start \
             from {from})",
            existing.name_any()
        )
    })
}

use appenv_core::validate::restore_refusal as source_refusal;
use appenv_core::validate::shown_url;

/// Refuse a `--data-from` environment that does not exist or cannot give the preview a backup.
async fn check_source(client: &Client, from: &str, object: &Value) -> anyhow::Result<()> {
    let api: Api<AppEnvironment> = Api::all(client.clone());
    let source = api
        .get_opt(from)
        .await
        .with_context(|| format!("reading AppEnvironment {from} (--data-from)"))?
        .with_context(|| {
            format!(
                "--data-from {from}: AppEnvironment {from} does not exist (kubectl get appenvironments)"
            )
        })?;
    let preview: AppEnvironment =
        serde_json::from_value(object.clone()).context("reading the preview back")?;
    if let Some(why) = source_refusal(&source, &preview.name_any(), &preview.spec) {
        bail!("--data-from {from}: {why}");
    }
    Ok(())
}

fn conditions_of(
    status: Option<&AppEnvironmentStatus>,
) -> Vec<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    status
        .map(|s| s.conditions.iter().collect())
        .unwrap_or_default()
}

/// One line of progress: phase, components ready/desired, migration state.
fn progress_line(env: &AppEnvironment) -> String {
    let status = env.status.as_ref();
    let phase = status
        .and_then(|s| s.phase)
        .map(|p| format!("{p:?}"))
        .unwrap_or_else(|| "Pending".to_owned());
    let components: Vec<String> = status
        .map(|s| {
            s.components
                .iter()
                .map(|c| format!("{} {}/{}", c.name, c.ready, c.desired))
                .collect()
        })
        .unwrap_or_default();
    let migrations = env
        .condition(condition::MIGRATIONS_SUCCEEDED)
        .map(|c| format!("; migrations: {}", c.reason))
        .unwrap_or_default();
    // The initial restore and seed run before anything else: say which step runs.
    let database = env
        .condition(condition::DATABASE_READY)
        .filter(|c| c.reason == Reason::Restoring.as_str())
        .map(|c| format!("; database: {}", c.message))
        .unwrap_or_default();
    format!(
        "{phase}: {}{database}{migrations}",
        if components.is_empty() {
            "starting".to_owned()
        } else {
            components.join(", ")
        }
    )
}

fn is_ready(env: &AppEnvironment) -> bool {
    env.status.as_ref().and_then(|s| s.observed_generation) == env.metadata.generation
        && env
            .condition(condition::READY)
            .is_some_and(|c| c.status == "True")
}

/// Why the preview cannot become Ready without a change, if that is known already.
fn hopeless(env: &AppEnvironment) -> Option<String> {
    let current =
        env.status.as_ref().and_then(|s| s.observed_generation) == env.metadata.generation;
    if !current {
        return None;
    }
    if let Some(valid) = env
        .condition(condition::VALID)
        .filter(|c| c.status == "False")
    {
        return Some(format!("the spec is invalid: {}", valid.message));
    }
    if let Some(failed) = env
        .condition(condition::MIGRATIONS_SUCCEEDED)
        .filter(|c| c.reason == Reason::Failed.as_str())
    {
        return Some(failed.message.clone());
    }
    // The initial restore or seed failed, or the source refuses: nothing of the app starts.
    if let Some(failed) = env
        .condition(condition::DATABASE_READY)
        .filter(|c| c.reason == Reason::RestoreFailed.as_str())
    {
        return Some(failed.message.clone());
    }
    env.condition(condition::DEGRADED)
        .filter(|c| c.status == "True" && cannot_start(&c.message))
        .map(|c| format!("a component cannot start: {}", c.message))
}

/// Whether a Degraded message reports a failure that waiting will not cure (a missing Secret,
/// an image that cannot be pulled, a Pod refused by admission, a volume that cannot be
/// mounted, a Pod that cannot be scheduled): the operator writes each as `...: REASON: ...`.
fn cannot_start(degraded: &str) -> bool {
    appenv_controller::CANNOT_START.iter().any(|reason| {
        degraded
            .split("; ")
            .any(|failure| failure.contains(&format!(": {reason}")))
    })
}

/// The last lines of the migration Job's Pod log, if it can be read.
async fn migration_log(client: &Client, namespace: &str) -> Option<String> {
    use k8s_openapi::api::core::v1::Pod;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&format!(
            "{}={}",
            label::COMPONENT,
            Component::Migrations
        )))
        .await
        .ok()?;
    let pod = list
        .items
        .into_iter()
        .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))?;
    let params = kube::api::LogParams {
        tail_lines: Some(20),
        ..kube::api::LogParams::default()
    };
    match pods.logs(&pod.name_any(), &params).await {
        Ok(log) if !log.trim().is_empty() => Some(log),
        Ok(_) => Some(format!("(Pod {} wrote no log)", pod.name_any())),
        Err(err) => Some(format!(
            "(log of Pod {} unavailable: {err})",
            pod.name_any()
        )),
    }
}

fn github_output(url: Option<&str>, namespace: &str) -> anyhow::Result<()> {
    let Some(path) = std::env::var_os("GITHUB_OUTPUT").filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening GITHUB_OUTPUT {}", PathBuf::from(&path).display()))?;
    writeln!(file, "url={}", url.unwrap_or_default())?;
    writeln!(file, "namespace={namespace}")?;
    Ok(())
}

/// The preview's AppEnvironment, read back by the strict manifest reader and validated as
/// `appenv render` does, so that nothing goes to the cluster that the server would drop or the
/// operator refuse. The operator's domain is not known here, so a host is not required.
pub fn checked_preview(args: &UpArgs, base: Option<&str>) -> anyhow::Result<Value> {
    let object = preview_object(args, base)?;
    let text = serde_json::to_string(&object).context("serializing the preview")?;
    let env = manifest::parse(&text)
        .into_iter()
        .next()
        .context("the preview is empty")?
        .map_err(|read| read.errors.iter().map(ToString::to_string).collect());
    let problems: Vec<String> = match env {
        Ok(env) => match validate::validate(&env, &operator_unknown(&env)?) {
            Ok(_) => return Ok(object),
            Err(invalid) => invalid.0.iter().map(ToString::to_string).collect(),
        },
        Err(problems) => problems,
    };
    bail!("the preview spec is invalid:\n  {}", problems.join("\n  "))
}

/// Settings for checking a preview without knowing the operator's: any domain, the namespaces
/// the spec copies from allowed, any image. The operator applies its own and reports a refusal
/// in the status, which `--wait` prints.
fn operator_unknown(env: &appenv_api::AppEnvironment) -> anyhow::Result<Settings> {
    let copy_from = env
        .spec
        .namespace
        .copy
        .iter()
        .filter_map(|c| appenv_core::settings::DnsLabel::parse_copy_source(&c.namespace).ok())
        .collect();
    Ok(Settings {
        preview_domain: Some("preview.invalid".parse()?),
        copy_from_namespaces: copy_from,
        ..Settings::default()
    })
}

/// Read the base file and build the checked preview: all before the cluster is contacted.
fn prepare_up(args: &UpArgs) -> anyhow::Result<Value> {
    let base = match &args.file {
        Some(path) => Some(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        None => None,
    };
    checked_preview(args, base.as_deref())
}

async fn up(client: &Client, args: UpArgs, object: Value) -> anyhow::Result<bool> {
    let name = preview_name(&args.app, args.pr);
    let api: Api<AppEnvironment> = Api::all(client.clone());
    if let Some(from) = &args.data_from {
        check_source(client, from, &object).await?;
        if let Some(note) = credentials_note(&object) {
            eprintln!("{note}");
        }
    }
    let existing = api.get_opt(&name).await?;
    let existed = existing.is_some();
    let data = args
        .data_from
        .as_ref()
        .map(|from| format!("{from}'s backup"))
        .or_else(|| {
            let url = args.data_url.as_ref()?;
            Some(format!("the dump at {}", shown_url(url)))
        });
    if let Some(data) = &data
        && let Some(note) = existing.as_ref().and_then(|e| late_restore_note(e, data))
    {
        eprintln!("{note}");
    }
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .with_context(|| format!("applying AppEnvironment {name}"))?;
    eprintln!(
        "{} preview {name} (image {}, generation {})",
        if existed { "updated" } else { "created" },
        args.image,
        applied.metadata.generation.unwrap_or(0)
    );
    let namespace = name.clone();
    if !args.wait {
        github_output(None, &namespace)?;
        return Ok(true);
    }
    let env = wait_until_settled(&api, &name, args.timeout).await?;
    let namespace = env
        .status
        .as_ref()
        .and_then(|s| s.namespace.clone())
        .unwrap_or(namespace);
    if is_ready(&env) {
        let url = env.status.as_ref().and_then(|s| s.url.clone());
        match &url {
            Some(url) => println!("{url}"),
            None => println!("ready (no Ingress): namespace {namespace}"),
        }
        github_output(url.as_deref(), &namespace)?;
        return Ok(true);
    }
    let failure = hopeless(&env);
    eprintln!(
        "error: preview {name} {}",
        match &failure {
            Some(why) => format!("failed: {why}"),
            None => format!("is not Ready after {}s", args.timeout.as_secs()),
        }
    );
    for c in conditions_of(env.status.as_ref()) {
        let bad = (c.type_ == condition::READY
            || c.type_ == condition::VALID
            || c.type_ == condition::DATABASE_READY
            || c.type_ == condition::MIGRATIONS_SUCCEEDED)
            && c.status == "False"
            || (c.type_ == condition::DEGRADED && c.status == "True");
        if bad {
            eprintln!("  {}={} ({}): {}", c.type_, c.status, c.reason, c.message);
        }
    }
    if env
        .condition(condition::MIGRATIONS_SUCCEEDED)
        .is_some_and(|c| c.status == "False")
        && let Some(log) = migration_log(client, &namespace).await
    {
        eprintln!("  migration log (last lines):");
        for line in log.lines() {
            eprintln!("    {line}");
        }
    }
    Ok(false)
}

/// Watch the preview until it is Ready or cannot become Ready without a change, printing a
/// line whenever its progress changes; past `timeout`, its state then. Errors if it is
/// deleted meanwhile or cannot be watched.
async fn wait_until_settled(
    api: &Api<AppEnvironment>,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<AppEnvironment> {
    let started = Instant::now();
    // The condition is called for every change the watch sees; it remembers the last line.
    let last = std::sync::Mutex::new(String::new());
    let settled = |env: Option<&AppEnvironment>| {
        let Some(env) = env else {
            return true;
        };
        let line = progress_line(env);
        let mut last = last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *last != line {
            eprintln!("[{:>4}s] {line}", started.elapsed().as_secs());
            *last = line;
        }
        is_ready(env) || hopeless(env).is_some()
    };
    let watched = tokio::time::timeout(timeout, await_condition(api.clone(), name, settled)).await;
    match watched {
        Ok(Ok(Some(env))) => Ok(env),
        Ok(Ok(None)) => bail!("AppEnvironment {name} was deleted while waiting for it"),
        Ok(Err(err)) => Err(err).with_context(|| format!("watching AppEnvironment {name}")),
        // The deadline: its state now, for the report.
        Err(_) => api
            .get(name)
            .await
            .with_context(|| format!("reading AppEnvironment {name}")),
    }
}

async fn down(client: &Client, args: DownArgs) -> anyhow::Result<bool> {
    use k8s_openapi::api::core::v1::Namespace;
    let name = preview_name(&args.app, args.pr);
    let api: Api<AppEnvironment> = Api::all(client.clone());
    let Some(env) = api.get_opt(&name).await? else {
        eprintln!("no preview {name}: nothing to delete");
        return Ok(true);
    };
    let namespace = env
        .status
        .as_ref()
        .and_then(|s| s.namespace.clone())
        .unwrap_or_else(|| name.clone());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let owned = namespaces.get_opt(&namespace).await?.is_some_and(|ns| {
        ns.owner_references()
            .iter()
            .any(|o| o.uid == env.uid().unwrap_or_default())
    });
    match api.delete(&name, &DeleteParams::background()).await {
        Ok(_) => eprintln!("deleting preview {name}"),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(err) => return Err(err).with_context(|| format!("deleting AppEnvironment {name}")),
    }
    if owned {
        // Garbage collection would get there too, but only once it has discovered the
        // AppEnvironment type, which can take half a minute: delete the namespace now.
        match namespaces
            .delete(&namespace, &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            // A token for previews only (the chart's preview-author role) may not delete
            // namespaces: garbage collection removes it with the AppEnvironment.
            Err(kube::Error::Api(e)) if e.code == 403 => eprintln!(
                "namespace {namespace} goes with the preview (garbage collection): this token \
                 may not delete namespaces"
            ),
            Err(err) => return Err(err).with_context(|| format!("deleting namespace {namespace}")),
        }
    }
    if !args.wait {
        return Ok(true);
    }
    if !owned {
        eprintln!(
            "namespace {namespace} is not owned by the preview (adopted or retained): it stays"
        );
        return Ok(true);
    }
    let started = Instant::now();
    loop {
        match namespaces.get_opt(&namespace).await? {
            None => {
                eprintln!(
                    "[{:>4}s] namespace {namespace} is gone",
                    started.elapsed().as_secs()
                );
                return Ok(true);
            }
            Some(ns) if started.elapsed() >= args.timeout => {
                eprintln!(
                    "error: namespace {namespace} still exists after {}s",
                    args.timeout.as_secs()
                );
                if let Some(phase) = ns.status.as_ref().and_then(|s| s.phase.clone()) {
                    eprintln!("  phase: {phase}");
                }
                for c in ns.status.iter().flat_map(|s| s.conditions.iter().flatten()) {
                    if c.status == "True" {
                        eprintln!("  {}: {}", c.type_, c.message.clone().unwrap_or_default());
                    }
                }
                for f in ns.spec.iter().flat_map(|s| s.finalizers.iter().flatten()) {
                    eprintln!("  namespace finalizer: {f}");
                }
                return Ok(false);
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

fn age(since: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> String {
    let Some(since) = since else {
        return "-".to_owned();
    };
    let secs = k8s_openapi::jiff::Timestamp::now()
        .duration_since(since.0)
        .as_secs()
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

async fn list(client: &Client, args: ListArgs) -> anyhow::Result<bool> {
    let api: Api<AppEnvironment> = Api::all(client.clone());
    let mut previews: Vec<AppEnvironment> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.spec.preview.is_some())
        .filter(|e| args.app.as_ref().is_none_or(|app| &e.spec.app == app))
        .collect();
    previews.sort_by_key(|e| {
        (
            e.spec.app.clone(),
            e.spec.preview.as_ref().map(|p| p.pull_request),
        )
    });
    let rows: Vec<Value> = previews
        .iter()
        .map(|e| {
            let status = e.status.as_ref();
            json!({
                "pr": e.spec.preview.as_ref().map(|p| p.pull_request),
                "app": e.spec.app,
                "name": e.name_any(),
                "phase": status.and_then(|s| s.phase).map(|p: Phase| format!("{p:?}")),
                "age": age(e.metadata.creation_timestamp.as_ref()),
                "expiresAt": status.and_then(|s| s.expires_at.as_ref()).map(|t| t.0.to_string()),
                "url": status.and_then(|s| s.url.clone()),
                "image": e.spec.image,
            })
        })
        .collect();
    match args.output.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&rows)?),
        "table" => {
            println!(
                "{:<6} {:<24} {:<12} {:<6} {:<22} URL",
                "PR", "APP", "PHASE", "AGE", "EXPIRES"
            );
            for row in &rows {
                let text = |key: &str| {
                    row[key]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| "-".to_owned())
                };
                println!(
                    "{:<6} {:<24} {:<12} {:<6} {:<22} {}",
                    row["pr"]
                        .as_i64()
                        .map(|n| n.to_string())
                        .unwrap_or_default(),
                    text("app"),
                    text("phase"),
                    text("age"),
                    text("expiresAt"),
                    text("url")
                );
            }
        }
        other => bail!("-o {other:?}: expected table or json"),
    }
    Ok(true)
}

/// Fail with a clear message if the cluster does not serve AppEnvironments at all (an API
/// server answers a missing resource type with a bare "404 page not found").
async fn require_crd(client: &Client) -> anyhow::Result<()> {
    let api: Api<AppEnvironment> = Api::all(client.clone());
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => bail!(
            "this cluster has no AppEnvironment API: install the CRD (`kubectl apply -f crds/`) and run the appenv operator"
        ),
        Err(err) => Err(err).context("listing AppEnvironments"),
    }
}

async fn connect() -> anyhow::Result<Client> {
    let client = Client::try_default()
        .await
        .context("connecting to Kubernetes (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    require_crd(&client).await?;
    Ok(client)
}

pub async fn run(command: PreviewCommand) -> anyhow::Result<bool> {
    match command {
        PreviewCommand::Up(args) => {
            // A preview that cannot work is refused before any request, so nothing is created.
            let object = prepare_up(&args)?;
            up(&connect().await?, *args, object).await
        }
        PreviewCommand::Down(args) => down(&connect().await?, args).await,
        PreviewCommand::List(args) => list(&connect().await?, args).await,
        PreviewCommand::Sleep(args) => {
            crate::cli::sleep::run(&connect().await?, &args, false).await
        }
        PreviewCommand::Wake(args) => crate::cli::sleep::run(&connect().await?, &args, true).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(set: &[&str]) -> UpArgs {
        UpArgs {
            app: "flask-react-template".into(),
            pr: 7,
            image: "ghcr.io/x/frt:pr-7".into(),
            file: None,
            set: set.iter().map(|s| (*s).to_owned()).collect(),
            ttl: Some("24h".into()),
            data_from: None,
            data_url: None,
            data_sha256: None,
            data_backup: None,
            data_credentials: None,
            seed: Vec::new(),
            wait: false,
            timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_preview_from_a_production_base_gets_its_own_host_namespace_and_data_policy() {
        let base = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/flask-react-template-production.yaml"
        ))
        .expect("example");
        let object = preview_object(
            &args(&["workers.0.replicas=1", "web.replicas=1"]),
            Some(&base),
        )
        .expect("builds");
        assert_eq!(object["metadata"]["name"], "flask-react-template-pr-7");
        let spec = &object["spec"];
        assert_eq!(spec["profile"], "Preview");
        assert_eq!(spec["image"], "ghcr.io/x/frt:pr-7");
        assert_eq!(spec["preview"]["pullRequest"], 7);
        assert_eq!(spec["preview"]["ttl"], "24h");
        assert!(
            spec["web"]["ingress"].get("host").is_none(),
            "the production host is not reused"
        );
        // The preview's namespace is its own; the base file's way out to MongoDB and the copy
        // of its credentials are kept.
        assert_eq!(
            spec["namespace"]
                .as_object()
                .map(|ns| ns.keys().map(String::as_str).collect::<Vec<_>>()),
            Some(vec!["copy", "egress"])
        );
        assert_eq!(spec["namespace"]["egress"][0]["ports"][0], 27017);
        assert_eq!(spec["namespace"]["copy"][0]["name"], "doppler-secrets");
        assert_eq!(spec["workers"][0]["replicas"], 1);
        assert_eq!(spec["web"]["replicas"], 1);
        let env: AppEnvironment = serde_json::from_value(object).expect("a valid AppEnvironment");
        assert_eq!(env.spec.workers[1].name, "beat");
    }

    #[test]
    fn set_reports_bad_paths_and_mismatched_apps() {
        let err = preview_object(&args(&["workers.5.replicas=1"]), None).expect_err("no workers");
        assert_eq!(
            err.to_string(),
            "--set workers.5.replicas=1: workers.5: the spec has no workers list to index (set the whole list instead)"
        );
        let err = preview_object(&args(&["novalue"]), None).expect_err("no value");
        assert_eq!(err.to_string(), "--set novalue: expected PATH=VALUE");
        let base = "apiVersion: appenv.dev/v1alpha1\nkind: AppEnvironment\nmetadata: {name: x}\nspec: {app: other, image: 'i:1'}\n";
        let err = preview_object(&args(&[]), Some(base)).expect_err("app mismatch");
        assert!(err.to_string().contains("does not match spec.app"), "{err}");
    }

    #[test]
    fn every_refused_set_is_reported_at_once() {
        let err = preview_object(
            &args(&["web.replicaz=2", "imgae=x", "web.replicas=1"]),
            None,
        )
        .expect_err("typos");
        assert_eq!(
            err.to_string(),
            "--set web.replicaz=2: web.replicaz is not a field of the AppEnvironment spec; did you mean web.replicas?\n\
             --set imgae=x: imgae is not a field of the AppEnvironment spec; did you mean image?"
        );
    }

    fn degraded(message: &str) -> AppEnvironment {
        let mut env: AppEnvironment = serde_json::from_value(json!({
            "apiVersion": "appenv.dev/v1alpha1", "kind": "AppEnvironment",
            "metadata": {"name": "frt-pr-7", "generation": 1},
            "spec": {"app": "frt", "image": "frt:1"},
            "status": {"observedGeneration": 1, "phase": "Degraded", "conditions": [{
                "type": "Degraded", "status": "True", "reason": "ComponentFailing",
                "message": message, "lastTransitionTime": "2026-12-01T12:00:00Z"}]},
        }))
        .expect("an AppEnvironment");
        env.metadata.generation = Some(1);
        env
    }

    #[test]
    fn a_preview_that_cannot_start_is_hopeless_and_a_passing_failure_is_not() {
        for terminal in [
            "web: Pod frt-1 container app: CreateContainerConfigError: secret \"doppler-secrets\" not found",
            "web: Pod frt-1 container app: ImagePullBackOff: Back-off pulling image \"x\"",
            "worker-beat: FailedCreate: pods \"frt-beat-1\" is forbidden: violates PodSecurity",
            "web: Pod frt-1: FailedMount: MountVolume.SetUp failed for volume \"c\" : secret \"t\" not found",
            "redis: Pod frt-redis-1: Unschedulable: 0/1 nodes are available: 1 persistentvolumeclaim \"d\" not found.",
        ] {
            let why = hopeless(&degraded(terminal)).expect(terminal);
            assert!(why.ends_with(terminal), "{why}");
        }
        for passing in [
            "web: Pod frt-1 container app: ErrImagePull: rpc error: code = Unavailable",
            "web: Pod frt-1 container app: CrashLoopBackOff",
        ] {
            assert_eq!(hopeless(&degraded(passing)), None, "{passing}");
        }
        let mut older = degraded("web: Pod frt-1 container app: ImagePullBackOff: x");
        older.metadata.generation = Some(2);
        assert_eq!(
            hopeless(&older),
            None,
            "a status of an older spec says nothing"
        );
    }

    #[test]
    fn a_preview_is_read_strictly_and_validated_before_it_is_sent() {
        // A value of the wrong type: the strict reader names the field.
        let err = checked_preview(&args(&["web.replicas=many"]), None).expect_err("type");
        let message = format!("{err:#}");
        assert!(
            message.starts_with("the preview spec is invalid:\n  spec.web.replicas: "),
            "{message}"
        );
        // A well-typed value that breaks a rule: validation names the field and the rule.
        let err = checked_preview(&args(&["preview.ttl=soon"]), None).expect_err("rule");
        let message = format!("{err:#}");
        assert!(
            message.contains(
                "spec.preview.ttl: \"soon\" must be a positive number followed by s, m, h or d"
            ),
            "{message}"
        );
        let object = checked_preview(&args(&["web.replicas=2"]), None).expect("valid");
        assert_eq!(object["spec"]["web"]["replicas"], 2);
    }

    const SHOP_BASE: &str = "apiVersion: appenv.dev/v1alpha1
kind: AppEnvironment
metadata: {name: shop-prod}
spec:
  app: flask-react-template
  image: 'shop:1'
  namespace:
    copy: [{namespace: shop-secrets, name: appenv-restore-credentials}]
  database: {postgres: {}}
";

    fn data_args(from: &str, seed: &[&str]) -> UpArgs {
        UpArgs {
            data_from: Some(from.into()),
            data_url: None,
            data_sha256: None,
            seed: seed.iter().map(|s| (*s).to_owned()).collect(),
            ..args(&[])
        }
    }

    #[test]
    fn data_from_sets_the_restore_with_latest_and_the_default_credentials() {
        let object = checked_preview(
            &data_args("shop-prod", &["flask", "blank-personal-data", "--all"]),
            Some(SHOP_BASE),
        )
        .expect("valid");
        assert_eq!(
            object["spec"]["database"]["restore"],
            json!({"fromEnvironment": "shop-prod", "backup": "latest",
                   "credentialsSecret": "appenv-restore-credentials",
                   "seed": {"command": ["flask", "blank-personal-data", "--all"]}})
        );
        assert_eq!(credentials_note(&object), None, "the base copies it in");
        let mut chosen = data_args("shop-prod", &[]);
        chosen.data_backup = Some("20261201-030000-000".into());
        chosen.data_credentials = Some("s3-read".into());
        let object = checked_preview(&chosen, Some(SHOP_BASE)).expect("valid");
        assert_eq!(
            object["spec"]["database"]["restore"],
            json!({"fromEnvironment": "shop-prod", "backup": "20261201-030000-000",
                   "credentialsSecret": "s3-read"})
        );
        assert_eq!(
            credentials_note(&object).as_deref(),
            Some(
                "note: spec.namespace.copy copies no Secret s3-read into the preview's namespace: \
                 the restore from shop-prod waits until it exists there (it needs \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY that can read shop-prod's bucket)"
            )
        );
    }

    #[test]
    fn data_url_sets_a_restore_from_the_dump_and_bad_urls_are_refused_before_anything_is_applied() {
        let sha = "ab".repeat(32);
        let with = |url: &str, sha256: Option<&str>| UpArgs {
            data_from: None,
            data_url: Some(url.into()),
            data_sha256: sha256.map(str::to_owned),
            seed: vec!["flask".into(), "blank".into()],
            ..args(&[])
        };
        let object = checked_preview(
            &with("http://dumps.internal/shop.dump", Some(&sha)),
            Some(SHOP_BASE),
        )
        .expect("valid");
        assert_eq!(
            object["spec"]["database"]["restore"],
            json!({"fromUrl": {"url": "http://dumps.internal/shop.dump", "sha256": sha},
                   "seed": {"command": ["flask", "blank"]}})
        );
        assert_eq!(credentials_note(&object), None, "a dump needs no S3 Secret");
        let err = checked_preview(
            &with("http://dumps.internal/shop.dump?sig=s3cr3t", None),
            Some(SHOP_BASE),
        )
        .expect_err("http without a checksum")
        .to_string();
        assert!(
            err.contains("spec.database.restore.fromUrl.url: an http:// URL needs sha256")
                && !err.contains("s3cr3t"),
            "{err}"
        );
        let parsed = |argv: &[&str]| {
            use clap::Parser as _;
            let base = [
                "appenv", "preview", "up", "--app", "shop", "--pr", "7", "--image", "shop:2",
            ];
            crate::cli::Cli::try_parse_from([&base[..], argv].concat())
                .map(|_| ())
                .map_err(|e| e.kind())
        };
        assert_eq!(
            parsed(&["--data-url", "https://h/d", "--data-from", "shop-prod"]),
            Err(clap::error::ErrorKind::ArgumentConflict)
        );
        assert_eq!(
            parsed(&["--data-sha256", &sha]),
            Err(clap::error::ErrorKind::MissingRequiredArgument)
        );
        assert_eq!(
            parsed(&["--data-url", "https://h/d", "--seed", "x"]),
            Ok(())
        );
    }

    #[test]
    fn data_from_keeps_the_base_files_credentials_and_seed_unless_told_otherwise() {
        let base = SHOP_BASE.replace(
            "database: {postgres: {}}",
            "database: {postgres: {}, restore: {fromEnvironment: shop-staging, backup: 20261101-000000-000, credentialsSecret: staging-read, seed: {command: [flask, blank]}}}",
        );
        let object = preview_object(&data_args("shop-prod", &[]), Some(&base)).expect("builds");
        assert_eq!(
            object["spec"]["database"]["restore"],
            json!({"fromEnvironment": "shop-prod", "backup": "latest",
                   "credentialsSecret": "staging-read", "seed": {"command": ["flask", "blank"]}})
        );
        let object =
            preview_object(&data_args("shop-prod", &["seed.sh"]), Some(&base)).expect("builds");
        assert_eq!(
            object["spec"]["database"]["restore"]["seed"],
            json!({"command": ["seed.sh"]})
        );
        // Without --data-from, the base file's restore stays as it is.
        let object = preview_object(&args(&[]), Some(&base)).expect("builds");
        assert_eq!(
            object["spec"]["database"]["restore"]["fromEnvironment"],
            "shop-staging"
        );
    }

    #[test]
    fn data_from_refuses_a_spec_without_a_database_and_a_seed_meant_for_a_shell() {
        let err = preview_object(&data_args("shop-prod", &[]), None).expect_err("no database");
        assert_eq!(
            err.to_string(),
            "--data-from shop-prod: the preview's spec has no spec.database to restore into (set \
             spec.database.postgres or spec.database.embedded in the base file, --file)"
        );
        let err = preview_object(&data_args("shop-prod", &["flask blank"]), Some(SHOP_BASE))
            .expect_err("one word per --seed");
        assert!(
            err.to_string()
                .starts_with("--seed \"flask blank\": one argument per --seed"),
            "{err}"
        );
        // An external database cannot be restored into: validation names the rule.
        let external = SHOP_BASE.replace(
            "database: {postgres: {}}",
            "database: {external: {secretRef: {name: db, key: url}}}",
        );
        let err =
            checked_preview(&data_args("shop-prod", &[]), Some(&external)).expect_err("external");
        assert!(
            format!("{err:#}").contains(
                "spec.database.restore: needs spec.database.postgres or spec.database.embedded"
            ),
            "{err:#}"
        );
    }

    #[test]
    fn the_data_options_parse_and_need_data_from() {
        use clap::Parser as _;
        let up = |extra: &[&str]| {
            let base = [
                "appenv", "preview", "up", "--app", "shop", "--pr", "7", "--image", "shop:7",
            ];
            crate::cli::Cli::try_parse_from([&base[..], extra].concat()).map(|cli| {
                match cli.command {
                    crate::cli::Command::Preview(PreviewCommand::Up(args)) => *args,
                    other => panic!("not preview up: {other:?}"),
                }
            })
        };
        let args = up(&[
            "--data-from",
            "shop-prod",
            "--data-backup",
            "20261201-030000-000",
            "--data-credentials",
            "s3-read",
            "--seed",
            "flask",
            "--seed",
            "blank",
            "--seed",
            "--keep-admins",
        ])
        .expect("parses");
        assert_eq!(args.data_from.as_deref(), Some("shop-prod"));
        assert_eq!(args.data_backup.as_deref(), Some("20261201-030000-000"));
        assert_eq!(args.data_credentials.as_deref(), Some("s3-read"));
        assert_eq!(args.seed, ["flask", "blank", "--keep-admins"]);
        let args = up(&[]).expect("parses");
        assert!(args.data_from.is_none() && args.seed.is_empty());
        for bad in [
            &["--data-backup", "latest"][..],
            &["--data-credentials", "x"],
            &["--seed", "flask"],
            &["--data-from", "shop-prod", "--data-backup", "yesterday"],
        ] {
            assert!(up(bad).is_err(), "{bad:?}");
        }
    }

    fn source(yaml_spec: &str) -> AppEnvironment {
        serde_norway::from_str(&format!(
            "apiVersion: appenv.dev/v1alpha1\nkind: AppEnvironment\nmetadata: {{name: shop-prod}}\nspec: {yaml_spec}\n"
        ))
        .expect("an AppEnvironment")
    }

    #[test]
    fn a_source_that_cannot_give_the_preview_a_backup_is_refused_with_why() {
        let preview: AppEnvironment = serde_norway::from_str(SHOP_BASE).expect("preview");
        let name = "flask-react-template-pr-7";
        let s3 = "{s3: {bucket: b, credentialsSecret: s3}}";
        let ok = source(&format!(
            "{{app: flask-react-template, image: 'i:1', database: {{postgres: {{}}}}, backup: {{destination: {s3}, restoreTo: [flask-react-template-pr-*]}}}}"
        ));
        assert_eq!(source_refusal(&ok, name, &preview.spec), None);
        let refusal =
            |spec: &str| source_refusal(&source(spec), name, &preview.spec).expect("refused");
        assert_eq!(
            refusal("{app: flask-react-template, image: 'i:1', database: {postgres: {}}}"),
            "shop-prod has no spec.backup: it has no backups to start from"
        );
        assert_eq!(
            refusal(&format!(
                "{{app: flask-react-template, image: 'i:1', database: {{postgres: {{}}}}, backup: {{destination: {s3}, restoreTo: [shop-staging]}}}}"
            )),
            "shop-prod's spec.backup.restoreTo does not name flask-react-template-pr-7: add it \
             (or a pattern such as flask-react-template-pr-*) to shop-prod's spec to let previews \
             start from its backups"
        );
        assert!(
            refusal("{app: flask-react-template, image: 'i:1', database: {postgres: {}}, backup: {destination: {volume: {size: 1Gi}}, restoreTo: ['*']}}")
                .contains("only an s3 destination")
        );
        assert_eq!(
            refusal(&format!(
                "{{app: flask-react-template, image: 'i:1', database: {{embedded: {{engine: SQLite, path: /d/x.sqlite}}}}, backup: {{destination: {s3}, restoreTo: ['*']}}}}"
            )),
            "shop-prod's database is SQLite, the preview's PostgreSQL"
        );
    }

    #[test]
    fn data_from_on_a_preview_that_ran_without_it_says_its_data_stays() {
        let preview = |status: serde_json::Value| -> AppEnvironment {
            serde_json::from_value(json!({
                "apiVersion": "appenv.dev/v1alpha1", "kind": "AppEnvironment",
                "metadata": {"name": "frt-pr-7"},
                "spec": {"app": "frt", "image": "frt:1"},
                "status": status,
            }))
            .expect("an AppEnvironment")
        };
        assert_eq!(
            late_restore_note(&preview(json!({"image": "frt:1"})), "frt-prod's backup").as_deref(),
            Some(
                "note: preview frt-pr-7 has run already: spec.database.restore acts on a first \
                 rollout only, so its data stays as it is (`appenv preview down`, then `up` \
                 again, to start from frt-prod's backup)"
            )
        );
        // Not rolled out yet, or restored already: nothing to say.
        assert_eq!(
            late_restore_note(&preview(json!({})), "frt-prod's backup"),
            None
        );
        assert_eq!(
            late_restore_note(
                &preview(json!({"image": "frt:1", "restore": {"initialized": true}})),
                "frt-prod's backup"
            ),
            None
        );
    }

    fn with_database(reason: &str, message: &str) -> AppEnvironment {
        let mut env: AppEnvironment = serde_json::from_value(json!({
            "apiVersion": "appenv.dev/v1alpha1", "kind": "AppEnvironment",
            "metadata": {"name": "frt-pr-7"},
            "spec": {"app": "frt", "image": "frt:1"},
            "status": {"observedGeneration": 1, "phase": "Progressing", "conditions": [{
                "type": "DatabaseReady", "status": "False", "reason": reason,
                "message": message, "lastTransitionTime": "2026-12-01T12:00:00Z"}]},
        }))
        .expect("an AppEnvironment");
        env.metadata.generation = Some(1);
        env
    }

    #[test]
    fn the_progress_says_which_restore_step_runs_and_a_failed_restore_is_hopeless() {
        let restoring = with_database(
            "Restoring",
            "restoring from shop-prod (backup latest): Job frt-restore-i0123456789",
        );
        assert_eq!(
            progress_line(&restoring),
            "Progressing: starting; database: restoring from shop-prod (backup latest): Job frt-restore-i0123456789"
        );
        assert_eq!(hopeless(&restoring), None);
        let waiting = with_database("WaitingForDatabase", "postgres 0/1");
        assert_eq!(progress_line(&waiting), "Progressing: starting");
        let failed = with_database(
            "RestoreFailed",
            "spec.database.restore: cannot restore from shop-prod (backup latest): its spec.backup.restoreTo does not name \"frt-pr-7\"",
        );
        assert_eq!(
            hopeless(&failed).as_deref(),
            Some(
                "spec.database.restore: cannot restore from shop-prod (backup latest): its spec.backup.restoreTo does not name \"frt-pr-7\""
            )
        );
    }
}
