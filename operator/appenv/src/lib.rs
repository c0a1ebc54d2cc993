//! appenv: the `appenv` command line, one module per subcommand (`cli`). The operator, the
//! preview commands and `render` are always built; `dev` and `bench` only with the `dev` feature.
#![warn(clippy::too_many_lines)]

pub mod cli;
