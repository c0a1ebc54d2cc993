//! Errors that name the field and the rule they break, shared by the manifest reader and
//! validation.

use std::fmt;

/// One violated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// e.g. `spec.web.replicas`
    pub path: String,
    /// why, e.g. `must be 1 when spec.database.embedded is set (DuckDB allows one writer)`
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every violation of one AppEnvironment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid(pub Vec<FieldError>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("; "))
    }
}

/// Quote at most 64 characters of user input in a message.
/// At most 64 characters of `value` as messages quote it: counted escaped, since messages quote
/// with `{:?}`, which writes an unusual character as up to ten (`\u{3347a}`).
pub fn truncate(value: &str) -> String {
    let mut width = 0;
    for (at, c) in value.char_indices() {
        width += c.escape_debug().count();
        if width > 64 {
            return format!("{}...", &value[..at]);
        }
    }
    value.to_owned()
}
