//! The permissions the activator needs, and why: the source of its ClusterRole. The cluster
//! tests check that it uses every verb granted here and nothing else.

/// One PolicyRule with the reason it exists.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub why: &'static str,
    pub groups: &'static [&'static str],
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
}

/// Cluster-wide: AppEnvironments are cluster-scoped, their web Pods are in every namespace.
pub const CLUSTER_RULES: &[Rule] = &[
    Rule {
        why: "Route by the host of each AppEnvironment's status.url, and record its last request (a merge patch of one annotation, conditional on the resourceVersion).",
        groups: &["appenv.dev"],
        resources: &["appenvironments"],
        verbs: &["list", "patch", "watch"],
    },
    Rule {
        why: "Forward to the Ready web Pods of each environment, watched by label (not Endpoints: their addresses are what routing needs, without a Service per environment).",
        groups: &[""],
        resources: &["pods"],
        verbs: &["list", "watch"],
    },
];
