//! What the engine needs from the world, as traits: the edge proxy and the health prober.
//! (Instances come through `cutover_runtime::Runtime`.) The real implementations live here
//! too; tests swap in fakes.

use cutover_config::EdgeLimits;
use cutover_health::{HttpCheck, ProbeFailure};
use cutover_proxy::protocol::{Hold, DEFAULT_WEIGHT, PROTOCOL};
use cutover_proxy::{Limits, ProxyClient, ProxyError, ProxyOptions, RouteKey, Upstream};
use cutover_runtime::InstanceInfo;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The edge proxy of each environment.
pub trait Edge: Send + Sync + 'static {
    /// Makes sure the environment's proxy runs and listens on `listen`.
    fn ensure(
        &self,
        env: &str,
        listen: SocketAddr,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Atomically points the environment's traffic at the instances of `release`, under
    /// `limits` (those of the config of the release that serves).
    fn switch(
        &self,
        env: &str,
        release: i64,
        instances: &[InstanceInfo],
        limits: &EdgeLimits,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Waits until no request is in flight to `upstreams` (true) or the drain timeout of the
    /// limits they were switched with passes (false: what is left, WebSockets, is closed).
    fn drain(
        &self,
        env: &str,
        upstreams: &[SocketAddr],
    ) -> impl Future<Output = Result<bool, String>> + Send;
    /// Puts a hold on the environment's new requests (maintenance, pause) or lifts it.
    fn hold(
        &self,
        env: &str,
        hold: Option<Hold>,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Where the environment's traffic goes now; `None` if its proxy is not running.
    fn upstreams(&self, env: &str) -> impl Future<Output = Option<Vec<SocketAddr>>> + Send;
    /// Stops the environment's proxy.
    fn stop(&self, env: &str) -> impl Future<Output = ()> + Send;
}

/// Asks an instance whether it is healthy.
pub trait Prober: Send + Sync + 'static {
    fn probe(
        &self,
        addr: SocketAddr,
        check: &HttpCheck,
    ) -> impl Future<Output = Result<(), ProbeFailure>> + Send;
}

/// Probes over real HTTP.
pub struct HttpProber;

impl Prober for HttpProber {
    async fn probe(&self, addr: SocketAddr, check: &HttpCheck) -> Result<(), ProbeFailure> {
        cutover_health::probe(addr, check).await
    }
}

/// cutover's own edge proxy, one detached process per environment, serving one route (the
/// environment); every upstream of a switch takes an equal share.
pub struct ProxyEdge {
    pub exe: PathBuf,
    pub state_dir: PathBuf,
}

impl ProxyEdge {
    fn options(&self, env: &str, listen: SocketAddr) -> ProxyOptions {
        ProxyOptions::new(&self.state_dir, env, listen)
    }

    fn client(&self, env: &str) -> ProxyClient {
        // The admin socket does not depend on the listen address.
        ProxyClient::new(
            self.options(env, SocketAddr::from(([127, 0, 0, 1], 0)))
                .admin_socket,
        )
    }
}

impl Edge for ProxyEdge {
    async fn ensure(&self, env: &str, listen: SocketAddr) -> Result<(), String> {
        match self.client(env).status().await {
            Ok(status) if status.listen == listen && status.protocol >= PROTOCOL => return Ok(()),
            // The committed config moved the environment (restart its proxy on the new
            // address), or an edge of an older cutover answers in a protocol this one does not
            // speak, or speaks an older one (replace it: the new one reads the routes file it
            // kept, and serves on).
            Ok(_) | Err(ProxyError::BadReply { .. }) => {
                let _ = self.client(env).shutdown().await;
            }
            Err(_) => {}
        }
        let (exe, state_dir, env) = (self.exe.clone(), self.state_dir.clone(), env.to_string());
        tokio::task::spawn_blocking(move || cutover_proxy::spawn(&exe, &state_dir, &env, listen))
            .await
            .map_err(|e| e.to_string())?
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn switch(
        &self,
        env: &str,
        release: i64,
        instances: &[InstanceInfo],
        limits: &EdgeLimits,
    ) -> Result<(), String> {
        let upstreams = instances
            .iter()
            .map(|i| Upstream::new(i.address, DEFAULT_WEIGHT).named(&i.id, release))
            .collect();
        self.client(env)
            .set(RouteKey::env(env), upstreams, edge_limits(limits))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn drain(&self, env: &str, upstreams: &[SocketAddr]) -> Result<bool, String> {
        self.client(env)
            .drain(upstreams, None)
            .await
            .map(|d| d.drained)
            .map_err(|e| e.to_string())
    }

    async fn hold(&self, env: &str, hold: Option<Hold>) -> Result<(), String> {
        self.client(env)
            .hold(RouteKey::env(env), hold)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn upstreams(&self, env: &str) -> Option<Vec<SocketAddr>> {
        let status = self.client(env).status().await.ok()?;
        Some(status.serving(&RouteKey::env(env)))
    }

    async fn stop(&self, env: &str) {
        let _ = self.client(env).shutdown().await;
    }
}

/// The edge's limits of a route, from `[environments.X.edge]`.
fn edge_limits(limits: &EdgeLimits) -> Limits {
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
    Limits {
        max_body: limits.max_body,
        upstream_timeout_ms: ms(limits.upstream_timeout),
        idle_timeout_ms: ms(limits.idle_timeout),
        header_timeout_ms: ms(limits.header_timeout),
        drain_timeout_ms: ms(limits.drain_timeout),
        hsts: limits.hsts,
    }
}
