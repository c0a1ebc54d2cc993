//! appenv-api: the `AppEnvironment` API (`appenv.dev/v1alpha1`), its CRD and the strict
//! manifest reader. Depends on kube's derive only: no client, no runtime, no I/O.
//!
//! The `AppEnvironment` API, `appenv.dev/v1alpha1`. Doc comments here become the CRD's schema
//! descriptions: they are written for the person editing an AppEnvironment.
#![forbid(unsafe_code)]
#![warn(clippy::too_many_lines)]

mod spec;
mod status;

pub mod crd;
pub mod field;
pub mod manifest;
pub mod names;

pub use spec::*;
pub use status::*;

/// The API group.
pub const GROUP: &str = "appenv.dev";
