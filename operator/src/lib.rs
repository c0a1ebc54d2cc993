//! appenv: one `AppEnvironment` object becomes a correct, running, self-cleaning namespace.
//!
//! - [`devcluster`]: a real local control plane and a simulated kubelet (tests, `appenv dev`).
//! - [`cli`]: the `appenv` command line.

pub mod api;
pub mod bench;
pub mod build;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod devcluster;
pub mod leader;
pub mod manifest;
pub mod quantity;
pub mod rbac;
pub mod requests;
pub mod secrets;
pub mod validate;
