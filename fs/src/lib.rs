//! The file system service: inodes, directory entries and blocks in schema `fs`, a POSIX-like
//! API over transactions, and a FUSE mount.
//!
//! The crate is empty so far.
