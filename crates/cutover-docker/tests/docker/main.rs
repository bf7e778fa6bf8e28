//! Integration tests against a real container engine and a real registry (one test binary,
//! modules by subject). Without an engine (or without `docker-registry`) every test prints why
//! it skipped, unless `CUTOVER_REQUIRE_DOCKER=1`, which turns the skip into a failure.

mod faults;
mod images;
mod podman;
mod runtime;
mod support;
