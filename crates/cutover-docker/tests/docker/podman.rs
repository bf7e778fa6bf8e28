//! The same runtime tests against Podman's Docker-compatible API socket.
//!
//! Runs when `CUTOVER_TEST_PODMAN_HOST` names the socket of a running
//! `podman system service --time=0 unix:///…`; skipped otherwise (fails instead with
//! `CUTOVER_REQUIRE_PODMAN=1`).

use cutover_docker::{Engine, EngineKind};

use crate::require;
use crate::runtime;

async fn podman() -> Option<Engine> {
    let required = std::env::var("CUTOVER_REQUIRE_PODMAN").as_deref() == Ok("1");
    let Ok(host) = std::env::var("CUTOVER_TEST_PODMAN_HOST") else {
        assert!(
            !required,
            "CUTOVER_REQUIRE_PODMAN=1 but CUTOVER_TEST_PODMAN_HOST is not set"
        );
        eprintln!("SKIPPED: CUTOVER_TEST_PODMAN_HOST is not set (podman system service socket)");
        return None;
    };
    match Engine::connect(Some(&host), EngineKind::Podman).await {
        Ok(e) => Some(e),
        Err(e) => {
            assert!(!required, "CUTOVER_REQUIRE_PODMAN=1 and {e}");
            eprintln!("SKIPPED: {e}");
            None
        }
    }
}

#[tokio::test]
async fn podman_start_health_secrets_and_a_fast_stop() {
    let engine = require!(podman().await);
    runtime::start_health_secret_stop(engine).await;
}

#[tokio::test]
async fn podman_readopts_by_label() {
    let engine = require!(podman().await);
    runtime::readoption_by_labels(engine).await;
}

#[tokio::test]
async fn podman_break_and_exit_at_once() {
    let engine = require!(podman().await);
    runtime::broken_and_crashing(engine).await;
}

#[tokio::test]
async fn podman_logs_volumes_and_bad_input() {
    let engine = require!(podman().await);
    runtime::logs_volumes_and_bad_input(engine).await;
}
