//! The activator against a real API server (the local cluster of appenv-localcluster, its
//! simulated kubelet's Pods answering HTTP on loopback addresses), without the operator: each
//! test sets the AppEnvironment's status itself. One test binary, so one control plane.
//!
//! Needs the control-plane binaries (`APPENV_K8S_BIN_DIR`, or the cache `.ci/control-plane.sh`
//! fills): a test fails, never skips, when the control plane cannot start.

mod activity;
mod routing;
mod support;
mod wake;
