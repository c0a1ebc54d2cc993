//! `appenv render -f FILE`: every child of each AppEnvironment in FILE as multi-document YAML,
//! ordered to apply cleanly, like `helm template`. Invalid input lists every violation.

use crate::cli::settings::SettingsArgs;
use anyhow::Context as _;
use appenv_api::manifest;
use appenv_core::build::{self, ClusterApis, Inputs};
use appenv_core::settings::Settings;
use appenv_core::validate;
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
                    out.push_str(&serde_norway::to_string(&object).unwrap_or_default());
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
