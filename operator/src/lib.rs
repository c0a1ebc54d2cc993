//! appenv: one `AppEnvironment` object becomes a correct, running, self-cleaning namespace.
//!
//! - [`devcluster`]: a real local control plane and a simulated kubelet (tests, `appenv dev`).
//! - [`cli`]: the `appenv` command line.

pub mod cli;
pub mod devcluster;
