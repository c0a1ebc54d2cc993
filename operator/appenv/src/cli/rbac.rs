//! `appenv rbac`: print the operator's permissions (as kept in `config/rbac/role.yaml`), or only
//! the rules of one role (as kept in `charts/appenv-operator/files/rbac/`).

use appenv_controller::rbac;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Rules {
    /// The ClusterRole's rules.
    Cluster,
    /// The leader-election Role's rules.
    LeaderElection,
    /// The rules of the ClusterRole for preview authors (CI).
    PreviewAuthor,
}

#[derive(Debug, clap::Args)]
pub struct RbacArgs {
    /// Print only this role's rules, as a YAML list (the chart's files/rbac/*.yaml).
    #[arg(long)]
    pub rules: Option<Rules>,
}

pub fn run(args: &RbacArgs) -> anyhow::Result<bool> {
    let text = match args.rules {
        None => rbac::manifest(),
        Some(Rules::Cluster) => rbac::rules_yaml(rbac::CLUSTER_RULES, 0),
        Some(Rules::LeaderElection) => rbac::rules_yaml(rbac::LEADER_ELECTION_RULES, 0),
        Some(Rules::PreviewAuthor) => rbac::rules_yaml(rbac::PREVIEW_AUTHOR_RULES, 0),
    };
    print!("{text}");
    Ok(true)
}
