//! appenv: the `appenv` command line, one module per subcommand (`cli`). The operator, the
//! preview commands and `render` are always built; `dev` and `bench` only with the `dev` feature.

pub mod cli;
