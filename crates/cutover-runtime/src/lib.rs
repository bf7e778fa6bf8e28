//! cutover-runtime: starts, stops and finds instances. See docs/ARCHITECTURE.md.
pub mod supervisor;
