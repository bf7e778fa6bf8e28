//! The instance supervisor role (`cutover supervise`).
use std::path::Path;

/// Reads an instance spec (JSON) from standard input and supervises that instance until it is
/// stopped. Returns the exit code of the supervisor process.
pub fn run(_state_dir: &Path) -> i32 {
    todo!()
}
