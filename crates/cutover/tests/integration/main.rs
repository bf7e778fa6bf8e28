//! Integration tests of the real `cutover` binary (one test binary, ripgrep style).
//!
//! Each test builds a [`support::Lab`]: a temporary git repository with the course's
//! `tasks-app` (compiled once per run with `rustc`), its own ports and state dir, and drives
//! `cutover` in it as a user would. Tests are independent and may run in parallel.
//!
//! Run: `cargo test -p cutover --test integration`.

mod bad_input;
mod resilience;
mod support;
mod walk;
