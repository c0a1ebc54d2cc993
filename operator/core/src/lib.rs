//! appenv-core: the pure middle of appenv. `validate` turns an `AppEnvironment` and the
//! operator's checked `settings` into a defaulted `Model` (or every violation, by field);
//! `build` turns a `Model` into every child object. No kube client, no async runtime, no I/O:
//! depends on appenv-api, k8s-openapi, ipnet and secrecy.
#![forbid(unsafe_code)]
#![warn(clippy::too_many_lines)]

pub mod build;
pub mod quantity;
pub mod schedule;
pub mod settings;
pub mod validate;
