//! The `AppEnvironment` API, `appenv.dev/v1alpha1`. Doc comments here become the CRD's schema
//! descriptions: they are written for the person editing an AppEnvironment.

mod spec;
mod status;

pub use spec::*;
pub use status::*;

/// The API group.
pub const GROUP: &str = "appenv.dev";
