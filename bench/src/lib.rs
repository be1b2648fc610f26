//! The benchmark harness: suites measured against baselines taken in the same run.
//!
//! The crate is empty so far.
