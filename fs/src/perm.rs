//! Who is calling, and what the mode bits let them do (as Linux does: the owner class, else
//! the group class, else others; root passes every check except executing a file that has no
//! execute bit at all).

use crate::error::{Error, Result};
use crate::{Kind, Stat};

/// Read permission.
pub const R: u32 = 4;
/// Write permission.
pub const W: u32 = 2;
/// Execute (files) or search (directories) permission.
pub const X: u32 = 1;

/// The calling identity: user, primary group and supplementary groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Primary group id: the group of new files.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Identity {
    /// The superuser.
    pub fn root() -> Identity {
        Identity {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        }
    }

    /// A user with a primary group and supplementary groups.
    pub fn new(uid: u32, gid: u32, groups: Vec<u32>) -> Identity {
        Identity { uid, gid, groups }
    }

    /// This process's effective identity.
    pub fn current() -> Identity {
        Identity {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            groups: nix::unistd::getgroups()
                .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
                .unwrap_or_default(),
        }
    }

    /// Whether this is the superuser.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Whether the caller is in group `gid`.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// Whether the mode bits of `st` grant every bit of `want` (a mix of [`R`], [`W`], [`X`]).
    pub fn may(&self, st: &Stat, want: u32) -> bool {
        if self.is_root() {
            return want & X == 0 || st.kind == Kind::Dir || st.mode & 0o111 != 0;
        }
        let bits = if self.uid == st.uid {
            st.mode >> 6
        } else if self.in_group(st.gid) {
            st.mode >> 3
        } else {
            st.mode
        } & 7;
        bits & want == want
    }

    /// [`Identity::may`], or [`Error::Access`] about `what`.
    ///
    /// # Errors
    /// [`Error::Access`].
    pub fn require(&self, st: &Stat, want: u32, what: impl FnOnce() -> String) -> Result<()> {
        if self.may(st, want) {
            Ok(())
        } else {
            Err(Error::Access(what()))
        }
    }

    /// Whether the caller owns `st` (or is root).
    pub fn owns(&self, st: &Stat) -> bool {
        self.is_root() || self.uid == st.uid
    }

    /// Whether the caller may remove or rename `child` out of directory `dir`, given the
    /// sticky bit (only the owner of the entry or of the directory, or root).
    pub fn may_unlink_from(&self, dir: &Stat, child: &Stat) -> bool {
        dir.mode & 0o1000 == 0 || self.is_root() || self.uid == dir.uid || self.uid == child.uid
    }
}
