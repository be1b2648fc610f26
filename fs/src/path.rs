//! The pure part of path resolution: splitting and validating paths and names, with no
//! database access.
//!
//! Paths are UTF-8, shorter than [`PATH_BYTES_MAX`] bytes, with components of at most
//! [`NAME_BYTES_MAX`] bytes and no NUL. Every path is taken from the root; a leading `/` is
//! optional. Empty components and `.` are dropped; `..` is kept for resolution, which follows
//! the directory's parent (so `..` after a symbolic link goes up from the link's target, as on
//! Linux).

use crate::error::{Error, Result};

/// Longest name of one directory entry, in bytes (as Linux `NAME_MAX`).
pub const NAME_BYTES_MAX: usize = 255;
/// Paths must be shorter than this many bytes (as Linux `PATH_MAX`, which counts the NUL).
pub const PATH_BYTES_MAX: usize = 4096;

/// A parsed path: its components, without `.` and empty ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// Components in order; may contain `..`.
    pub components: Vec<&'a str>,
    /// The path ended in `/` (or `/.`): its last component must be a directory.
    pub trailing_slash: bool,
}

impl<'a> Parsed<'a> {
    /// The last component and the components before it; `None` for the root.
    pub fn split_last(&self) -> Option<(&'a str, &[&'a str])> {
        self.components.split_last().map(|(l, r)| (*l, r))
    }
}

/// Splits and checks a path.
///
/// # Errors
/// [`Error::NotFound`] for an empty path, [`Error::NameTooLong`] for a path of
/// [`PATH_BYTES_MAX`] bytes or more or a component over [`NAME_BYTES_MAX`],
/// [`Error::Invalid`] for a NUL byte.
pub fn parse(path: &str) -> Result<Parsed<'_>> {
    if path.is_empty() {
        return Err(Error::NotFound("\"\" (an empty path)".into()));
    }
    if path.len() >= PATH_BYTES_MAX {
        return Err(Error::NameTooLong(shorten(path)));
    }
    if path.as_bytes().contains(&0) {
        return Err(Error::invalid(
            shorten(path),
            "a path cannot contain a NUL byte",
        ));
    }
    let mut components = Vec::with_capacity(8);
    let mut trailing_slash = false;
    for c in path.split('/') {
        match c {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            _ => {
                if c.len() > NAME_BYTES_MAX {
                    return Err(Error::NameTooLong(shorten(path)));
                }
                trailing_slash = false;
                components.push(c);
            }
        }
    }
    Ok(Parsed {
        components,
        trailing_slash: trailing_slash && path.len() > 1,
    })
}

/// Checks a name for a new directory entry.
///
/// # Errors
/// [`Error::NotFound`] for an empty name, [`Error::NameTooLong`] over [`NAME_BYTES_MAX`],
/// [`Error::Invalid`] for `/` or NUL, [`Error::Exists`] for `.` and `..` (which always
/// exist).
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::NotFound("\"\" (an empty name)".into()));
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(Error::NameTooLong(shorten(name)));
    }
    if name == "." || name == ".." {
        return Err(Error::Exists(name.into()));
    }
    if name.bytes().any(|b| b == b'/' || b == 0) {
        return Err(Error::invalid(
            shorten(name),
            "a name cannot contain '/' or a NUL byte",
        ));
    }
    Ok(())
}

/// Checks a symbolic link's target.
///
/// # Errors
/// [`Error::NotFound`] when empty, [`Error::NameTooLong`] at [`PATH_BYTES_MAX`] bytes or
/// more, [`Error::Invalid`] for a NUL byte.
pub fn check_target(target: &str) -> Result<()> {
    if target.is_empty() {
        return Err(Error::NotFound("\"\" (an empty link target)".into()));
    }
    if target.len() >= PATH_BYTES_MAX {
        return Err(Error::NameTooLong(shorten(target)));
    }
    if target.as_bytes().contains(&0) {
        return Err(Error::invalid(
            shorten(target),
            "a link target cannot contain a NUL byte",
        ));
    }
    Ok(())
}

/// Joins components into an absolute path, for messages.
pub fn join(components: &[&str]) -> String {
    let mut s = String::with_capacity(components.iter().map(|c| c.len() + 1).sum());
    for c in components {
        s.push('/');
        s.push_str(c);
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// A path cut short for an error message.
fn shorten(s: &str) -> String {
    const SHOWN: usize = 80;
    if s.len() <= SHOWN {
        return s.to_owned();
    }
    let mut end = SHOWN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any text is a path or refused; a parsed path has no empty or `.` component (`..`
        /// is kept for resolution) and joins back to a path with the same components.
        #[test]
        fn any_path_is_parsed_or_refused(p in "(/|[a-z.]{0,3}|\\PC{0,6}){0,12}") {
            if let Ok(parsed) = parse(&p) {
                for c in &parsed.components {
                    proptest::prop_assert!(!c.is_empty() && *c != ".", "{c:?}");
                }
                let again = join(&parsed.components);
                let reparsed = parse(&again).expect("a joined path parses");
                proptest::prop_assert_eq!(reparsed.components, parsed.components.clone());
            }
        }

        /// Any name is accepted or refused by the one check; accepted names have no '/'.
        #[test]
        fn any_name_is_checked(name in "\\PC{0,300}") {
            if check_name(&name).is_ok() {
                proptest::prop_assert!(!name.contains('/') && !name.is_empty());
            }
        }
    }

    #[test]
    fn components_drop_dots_and_empty_parts_but_keep_dotdot() {
        let p = parse("/a//b/./c/../d").unwrap();
        assert_eq!(p.components, vec!["a", "b", "c", "..", "d"]);
        assert!(!p.trailing_slash);
        assert!(parse("a/b/").unwrap().trailing_slash);
        assert!(parse("a/b/.").unwrap().trailing_slash);
        assert!(parse("/").unwrap().components.is_empty());
        assert!(!parse("/").unwrap().trailing_slash);
        assert_eq!(parse("rel/x").unwrap().components, vec!["rel", "x"]);
    }

    #[test]
    fn limits_and_bad_bytes_give_posix_errors() {
        assert_eq!(parse("").unwrap_err().errno(), libc::ENOENT);
        let long_name = "x".repeat(256);
        assert_eq!(parse(&long_name).unwrap_err().errno(), libc::ENAMETOOLONG);
        assert!(parse(&"x".repeat(255)).is_ok());
        let long_path = "/abcdefg".repeat(512);
        assert_eq!(long_path.len(), 4096);
        assert_eq!(parse(&long_path).unwrap_err().errno(), libc::ENAMETOOLONG);
        assert!(parse(&long_path[..4095]).is_ok());
        assert_eq!(parse("a\0b").unwrap_err().errno(), libc::EINVAL);
        assert_eq!(check_name("a/b").unwrap_err().errno(), libc::EINVAL);
        assert_eq!(check_name("a\0").unwrap_err().errno(), libc::EINVAL);
        assert_eq!(check_name(".").unwrap_err().errno(), libc::EEXIST);
        assert_eq!(check_name("..").unwrap_err().errno(), libc::EEXIST);
        assert_eq!(check_name("").unwrap_err().errno(), libc::ENOENT);
        assert_eq!(
            check_name(&long_name).unwrap_err().errno(),
            libc::ENAMETOOLONG
        );
        assert_eq!(check_target("").unwrap_err().errno(), libc::ENOENT);
        assert!(check_name("ok name.txt").is_ok());
    }

    #[test]
    fn join_renders_absolute_paths() {
        assert_eq!(join(&[]), "/");
        assert_eq!(join(&["a", "b"]), "/a/b");
    }
}
