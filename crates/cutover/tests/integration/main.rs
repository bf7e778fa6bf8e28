//! Integration tests of the real `cutover` binary (one test binary, ripgrep style).
//!
//! Each test builds a [`support::Lab`]: a temporary git repository with the course's
//! `tasks-app` (compiled once per run with `rustc`), its own ports and state dir, and drives
//! `cutover` in it as a user would. Tests are independent and may run in parallel.
//!
//! `real_apps` deploys apps shaped like real ones (a virtualenv's symlinks, a server taking its
//! port as an argument).
//!
//! The container tests (`containers`) use a [`container_support::DockerLab`]: the same, shipped
//! as an image to a registry of their own and run on the machine's Docker engine (skipped
//! without one, unless `CUTOVER_REQUIRE_DOCKER=1`). `registries` does the same walk against
//! registries run with TLS and htpasswd or token auth (`secure_registry`).
//!
//! The Swarm tests (`swarm`) use the same lab on the `swarm` runtime: the engine must be a
//! Swarm manager (they run `docker swarm init --advertise-addr 127.0.0.1` when its Swarm is
//! inactive).
//!
//! Run: `cargo test -p cutover --test integration`.

mod access_log;
mod bad_input;
mod container_support;
mod containers;
mod demo;
mod edge_holds;
mod edge_limits;
mod edge_tls;
mod git;
mod machine_edge;
mod netns;
mod pipeline;
mod real_apps;
mod registries;
mod remote;
mod resilience;
mod secure_registry;
mod support;
mod swarm;
mod walk;
mod websockets;
