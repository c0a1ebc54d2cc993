//! `appenv dev`: a local control plane and a simulated node, up until Ctrl-C.

use anyhow::Context as _;
use appenv_localcluster::kubelet::{NODE_NAME, SimKubelet};
use appenv_localcluster::{ControlPlane, StartOptions};
use std::path::PathBuf;

pub mod placeholders;

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Where to write the kubeconfig of the local control plane (removed on exit).
    #[arg(
        long,
        env = "APPENV_DEV_KUBECONFIG",
        default_value = ".appenv-dev/kubeconfig"
    )]
    pub kubeconfig: PathBuf,
    /// Also apply every AppEnvironment in this folder (its `invalid-*` files excepted).
    #[arg(long, num_args = 0..=1, default_missing_value = "examples")]
    pub examples: Option<PathBuf>,
    /// Do not run the operator in-process (to run `appenv operator` yourself).
    #[arg(long)]
    pub no_operator: bool,
    #[command(flatten)]
    pub controller_manager: appenv_bench::ControllerManagerArgs,
    #[command(flatten)]
    pub settings: crate::cli::settings::SettingsArgs,
}

/// The AppEnvironments of a folder (its `invalid-*` files excepted), in file order.
fn read_examples(dir: &std::path::Path) -> anyhow::Result<Vec<appenv_api::AppEnvironment>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("invalid-"))
        })
        .collect();
    files.sort();
    let mut envs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        for document in appenv_api::manifest::parse(&text) {
            envs.push(document.map_err(|e| {
                let lines: Vec<String> = e.errors.iter().map(ToString::to_string).collect();
                anyhow::anyhow!("{}: {}", file.display(), lines.join("; "))
            })?);
        }
    }
    Ok(envs)
}

/// Apply `envs`; returns their names.
async fn apply_examples(
    client: &kube::Client,
    envs: &[appenv_api::AppEnvironment],
) -> anyhow::Result<Vec<String>> {
    use kube::api::{Api, Patch, PatchParams};
    let api: Api<appenv_api::AppEnvironment> = Api::all(client.clone());
    let mut names = Vec::new();
    for env in envs {
        let name = kube::ResourceExt::name_any(env);
        api.patch(
            &name,
            &PatchParams::apply("appenv-dev").force(),
            &Patch::Apply(env),
        )
        .await
        .with_context(|| format!("applying {name}"))?;
        names.push(name);
    }
    Ok(names)
}

/// The Secrets and ConfigMaps the examples expect, with placeholder values: copy sources now,
/// the rest once appenv has made the environments' namespaces (in the background).
async fn create_placeholders(
    client: &kube::Client,
    expected: Vec<placeholders::Placeholder>,
) -> anyhow::Result<()> {
    for placeholder in &expected {
        let keys: Vec<&str> = placeholder.keys.iter().map(String::as_str).collect();
        eprintln!(
            "[appenv] placeholder {} {}/{} ({}){}",
            placeholder.kind,
            placeholder.namespace,
            placeholder.name,
            if keys.is_empty() {
                "no key read by name".to_owned()
            } else {
                format!("keys: {}", keys.join(", "))
            },
            if placeholder.source {
                ", copied into the environments that name it"
            } else {
                ", once appenv has created the namespace"
            }
        );
    }
    for placeholder in expected.iter().filter(|p| p.source) {
        placeholders::create(client, placeholder).await?;
    }
    let client = client.clone();
    tokio::spawn(async move {
        let within = std::time::Duration::from_secs(120);
        if let Err(err) = placeholders::create_in_environments(&client, &expected, within).await {
            eprintln!("[appenv] placeholders: {err:#}");
        }
    });
    Ok(())
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let kubeconfig = std::path::absolute(&args.kubeconfig)
        .with_context(|| format!("resolving --kubeconfig {}", args.kubeconfig.display()))?;
    let control_plane = ControlPlane::start(StartOptions {
        kubeconfig_copy: Some(kubeconfig.clone()),
        progress: true,
        controller_manager_rate: args.controller_manager.rate(),
    })
    .await
    .context("starting the local control plane")?;
    let client = control_plane.client().await?;
    let kubelet = SimKubelet::start(client.clone())
        .await
        .context("starting the simulated kubelet")?;
    appenv_controller::crd::install(&client, appenv_core::build::FIELD_MANAGER)
        .await
        .context("installing the AppEnvironment CRD")?;
    let examples = match &args.examples {
        Some(dir) => read_examples(dir)?,
        None => Vec::new(),
    };
    // The operator copies from the namespaces the examples copy from, as one configured for
    // them would (`--copy-from-namespace`).
    let settings = placeholders::allowing_sources(&examples, &args.settings.to_settings());
    create_placeholders(&client, placeholders::expected(&examples, &settings)).await?;
    let operator = (!args.no_operator).then(|| {
        let options = appenv_controller::Options {
            settings,
            ..appenv_controller::Options::default()
        };
        tokio::spawn(appenv_controller::run(client.clone(), options))
    });
    let applied = apply_examples(&client, &examples).await?;
    println!(
        "appenv dev: Kubernetes {} is ready at {}\n\
         \n  export KUBECONFIG={}\n  kubectl get nodes\n\n\
         Pods are SIMULATED: node {NODE_NAME} runs no containers. appenv's simulated kubelet\n\
         binds Pods to it and reports them Running/Ready (Pods of Jobs: Succeeded), so\n\
         Deployments, Jobs and rollouts behave as on a cluster, but no application code runs.\n\
         {}{}\n\
         Press Ctrl-C to stop; the cluster and its data are removed.",
        control_plane.server_version(),
        control_plane.server(),
        kubeconfig.display(),
        if operator.is_some() {
            "The AppEnvironment CRD is installed and the operator runs in this process.\n"
        } else {
            "The AppEnvironment CRD is installed; run `appenv operator` against it.\n"
        },
        if applied.is_empty() {
            String::new()
        } else {
            format!(
                "Applied {} example environments: {}\n  kubectl get appenv -w\n",
                applied.len(),
                applied.join(", ")
            )
        },
    );
    wait_for_shutdown_signal().await?;
    eprintln!("[appenv] stopping the local control plane");
    // The kubelet first, so its watches do not report the API server going away as errors.
    if let Some(operator) = operator {
        operator.abort();
    }
    drop(kubelet);
    control_plane.shutdown();
    Ok(())
}

async fn wait_for_shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
