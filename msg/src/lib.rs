//! The messaging service: send/recv, events, streams and pub/sub topics over the DBOS tables
//! and schema `msg`, woken through the kernel's notifier.
//!
//! The crate is empty so far; `dbos_kernel::Notifier` is the seam it will build on.
