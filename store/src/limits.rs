//! Limits of what the system database accepts, checked before a statement is sent, so a bad
//! value is refused with a clear error on its own and never fails a group commit it would have
//! joined.

use crate::error::{Error, Result};

/// Longest workflow ID, deduplication ID or partition key, in bytes.
pub const ID_BYTES_MAX: usize = 1_024;
/// Longest workflow, step or queue name, in bytes (names are indexed; a b-tree entry holds
/// about 2.7 KB).
pub const NAME_BYTES_MAX: usize = 1_024;
/// Largest input, output, error or step result, in bytes of portable JSON text.
pub const PAYLOAD_BYTES_MAX: usize = 16 << 20;

/// Checks text that Postgres will store: at most `max` bytes, no NUL character (which a `text`
/// column cannot hold), and not empty unless `may_be_empty`.
///
/// # Errors
/// [`Error::Invalid`] naming `what` and the rule broken.
pub fn check(what: &'static str, value: &str, max: usize, may_be_empty: bool) -> Result<()> {
    let why = if value.is_empty() && !may_be_empty {
        "must not be empty".to_owned()
    } else if value.len() > max {
        format!("is {} bytes, over the limit of {max}", value.len())
    } else if value.contains('\0') {
        "contains a NUL character, which Postgres text cannot hold".to_owned()
    } else {
        return Ok(());
    };
    Err(Error::Invalid { what, why })
}

pub use dbos_kernel::{shown, QUOTED_CHARS_MAX};

/// Checks a workflow ID (or another identifier) against [`ID_BYTES_MAX`].
///
/// # Errors
/// [`Error::Invalid`].
pub fn check_id(what: &'static str, value: &str) -> Result<()> {
    check(what, value, ID_BYTES_MAX, false)
}

/// Checks a name against [`NAME_BYTES_MAX`].
///
/// # Errors
/// [`Error::Invalid`].
pub fn check_name(what: &'static str, value: &str) -> Result<()> {
    check(what, value, NAME_BYTES_MAX, false)
}

/// Checks a payload against [`PAYLOAD_BYTES_MAX`].
///
/// # Errors
/// [`Error::Invalid`].
pub fn check_payload(what: &'static str, value: &str) -> Result<()> {
    check(what, value, PAYLOAD_BYTES_MAX, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_long_and_nul_values_are_refused_with_their_name() {
        assert!(check_id("workflow ID", "wf-1").is_ok());
        for (bad, says) in [
            (String::new(), "empty"),
            ("x".repeat(ID_BYTES_MAX + 1), "over the limit"),
            ("a\0b".to_owned(), "NUL"),
        ] {
            let e = check_id("workflow ID", &bad)
                .expect_err("refused")
                .to_string();
            assert!(e.contains("workflow ID") && e.contains(says), "{e}");
        }
        assert!(check_payload("output", "").is_ok());
    }

    #[test]
    fn long_values_are_shown_by_a_short_prefix() {
        assert_eq!(shown("q1"), "\"q1\"");
        let long = "é".repeat(5_000);
        let s = shown(&long);
        assert!(
            s.starts_with(&format!("\"{}\"…", "é".repeat(QUOTED_CHARS_MAX))),
            "{s}"
        );
        assert!(s.ends_with("(10000 bytes)"), "{s}");
    }
}
