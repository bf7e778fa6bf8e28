//! The admin protocol of the edge proxy: every request and every reply, as types shared by the
//! proxy (`admin.rs`) and its client (`client.rs`).
//!
//! Newline-delimited JSON on a unix socket: one [`Request`] per line (tagged by `"op"`), one
//! [`Reply`] line per request (tagged by `"reply"`). A refused request gets [`Reply::Error`]:
//! a code, the field at fault, what is wrong and how to fix it; nothing changes.
//!
//! ```text
//! {"op":"set","route":{"owner":"/srv/tasks/.cutover","env":"production"},"app":"tasks","listen":"0.0.0.0:80","hosts":["tasks.example.com"],"upstreams":[{"addr":"127.0.0.1:4001","weight":90},{"addr":"127.0.0.1:4002","weight":10}]}
//! {"reply":"set","generation":8}
//! {"op":"set","route":{"owner":"/srv/blog/.cutover","env":"production"},"listen":"0.0.0.0:80","hosts":["tasks.example.com"],"upstreams":[]}
//! {"reply":"error","code":"claimed","field":"hosts","message":"host tasks.example.com on 0.0.0.0:80 is claimed by tasks (state dir /srv/tasks/.cutover), environment production","hint":"…"}
//! {"op":"drain","upstreams":["127.0.0.1:4000"],"timeout_ms":30000}
//! {"reply":"drain","drained":true,"remaining":0,"closed":0}
//! {"op":"remove","owner":"/srv/tasks/.cutover"}
//! {"reply":"remove","generation":9,"left":1}
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The version of this protocol, reported by `status`. (The first one, before routes and
/// weights, had no number.)
/// 3 added route limits, drains without a timeout and closing tunnels at a drain's end.
/// 4: one edge per machine; routes keyed by owner and environment, with `listen` and `hosts`;
/// `check` and `remove`. 5: `handover` (an upgrade of the edge that drops nothing).
pub const PROTOCOL: u32 = 5;

/// The weight of an upstream that takes its full share; what the engine gives every upstream
/// of a blue-green switch.
pub const DEFAULT_WEIGHT: u32 = 100;

/// The largest weight accepted. Weights are relative: 90 and 10 send 90 % and 10 %.
pub const MAX_WEIGHT: u32 = 1000;

/// The most upstreams one route may have.
pub const MAX_UPSTREAMS: usize = 64;

/// Which traffic a route is, on the machine's one edge: the environment `env` of the app whose
/// server is `owner` (its canonical state dir). Every request of a route's `listen` address and
/// `hosts` goes to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RouteKey {
    /// The canonical state dir of the app's server.
    pub owner: String,
    pub env: String,
}

impl RouteKey {
    /// The route of `env` of the app whose state dir is `owner`.
    pub fn new(owner: impl Into<String>, env: impl Into<String>) -> RouteKey {
        RouteKey {
            owner: owner.into(),
            env: env.into(),
        }
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {}", self.env, self.owner)
    }
}

/// One upstream of a route and its share of new requests. Weight 0: no new requests, but the
/// upstream stays in the route (its requests in flight are counted, and a drain waits for them).
/// `instance` and `release` only name it in the access log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<i64>,
}

impl Upstream {
    pub fn new(addr: SocketAddr, weight: u32) -> Upstream {
        Upstream {
            addr,
            weight,
            instance: None,
            release: None,
        }
    }

    /// Names the upstream in the access log.
    pub fn named(mut self, instance: impl Into<String>, release: i64) -> Upstream {
        self.instance = Some(instance.into());
        self.release = Some(release);
        self
    }
}

/// A route and where it sends traffic: what `set` installs and what the routes file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(rename = "route")]
    pub key: RouteKey,
    /// The app's name, for messages (its state dir is in the key).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app: String,
    /// The address whose connections this route takes (the edge listens on every address a
    /// route names).
    pub listen: SocketAddr,
    /// The `Host`s of those connections this route takes (lowercase DNS names, `*.example.com`
    /// for one label under it); empty: all of them, and then no other route may use `listen`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// None (or only weight 0): the route answers 503.
    pub upstreams: Vec<Upstream>,
    /// What the route's requests may be and how long they may take (left out: the defaults).
    #[serde(default, skip_serializing_if = "Limits::is_default")]
    pub limits: Limits,
    /// Where the route's access log goes (left out: the edge's own, in its directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<PathBuf>,
    /// HTTPS on `listen`, with the certificate of these files or by ACME (absent: plain HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::tls::TlsSource>,
    /// The `[acme]` settings of a route whose certificate comes by ACME.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<crate::acme::AcmeSettings>,
    /// A plain-HTTP address that answers ACME HTTP-01 and redirects the route's hosts to
    /// `https://` (308).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_redirect: Option<SocketAddr>,
}

impl Route {
    /// A route of `key` on `listen` for every host, with no upstream yet.
    pub fn new(key: RouteKey, listen: SocketAddr) -> Route {
        Route {
            key,
            app: String::new(),
            listen,
            hosts: Vec::new(),
            upstreams: Vec::new(),
            limits: Limits::default(),
            access_log: None,
            tls: None,
            acme: None,
            http_redirect: None,
        }
    }

    /// What the route claims: its address and its hosts ("127.0.0.1:80 for a.example.com").
    pub fn claim(&self) -> String {
        if self.hosts.is_empty() {
            format!("{} (every host)", self.listen)
        } else {
            format!("{} for {}", self.listen, self.hosts.join(", "))
        }
    }

    /// Who owns it, for messages: "app tasks (state dir /srv/tasks/.cutover), environment
    /// production".
    pub fn owner(&self) -> String {
        let app = if self.app.is_empty() {
            "an app"
        } else {
            &self.app
        };
        format!(
            "{app} (state dir {}), environment {}",
            self.key.owner, self.key.env
        )
    }
}

/// A `Host` as routes compare it: lowercase, without port and trailing dot. Borrows when it
/// already is so (the usual case: no allocation per request).
pub fn normal_host(host: &str) -> std::borrow::Cow<'_, str> {
    let host = match host.rsplit_once(':') {
        // A port, not the inside of an IPv6 literal.
        Some((name, port)) if !name.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

/// Whether two listen addresses would need the same socket: the same port on the same IP or
/// on a wildcard IP (port 0 is a fresh port each time and overlaps nothing).
pub fn listens_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Why `route` may not join `others` (the routes of other keys): an address another route
/// uses for every host, or shares with a route of no hosts, or a host another route claims on
/// it. `None`: it may. What `set` and `check` refuse, naming the owner.
pub fn conflict<'a>(
    route: &Route,
    others: impl IntoIterator<Item = &'a Route>,
) -> Option<AdminError> {
    for other in others {
        if other.key == route.key || !listens_overlap(other.listen, route.listen) {
            continue;
        }
        let owner = other.owner();
        if other.listen != route.listen {
            return Some(
                AdminError::new(
                    ErrorCode::Claimed,
                    format!(
                        "{} overlaps {}, where the edge serves {owner}",
                        route.listen, other.listen
                    ),
                )
                .field("listen")
                .hint(format!(
                    "use {} itself with hosts of your own, or another port",
                    other.listen
                )),
            );
        }
        if other.hosts.is_empty() || route.hosts.is_empty() {
            let (message, hint) = if other.hosts.is_empty() {
                (
                    format!("{} is taken for every host by {owner}", route.listen),
                    "use another port, or give both `hosts` so that they can share it",
                )
            } else {
                (
                    format!(
                        "{} is shared by host: {owner} serves {} there, so a route without \
                         hosts cannot use it",
                        route.listen,
                        other.hosts.join(", ")
                    ),
                    "give this environment `hosts` of its own, or use another port",
                )
            };
            return Some(
                AdminError::new(ErrorCode::Claimed, message)
                    .field(if other.hosts.is_empty() {
                        "listen"
                    } else {
                        "hosts"
                    })
                    .hint(hint),
            );
        }
        if let Some(host) = route.hosts.iter().find(|h| other.hosts.contains(h)) {
            return Some(
                AdminError::new(
                    ErrorCode::Claimed,
                    format!("host {host} on {} is claimed by {owner}", route.listen),
                )
                .field("hosts")
                .hint(format!(
                    "remove {host} from `hosts`, or run `cutover down` in the app that has it \
                     (state dir {})",
                    other.key.owner
                )),
            );
        }
    }
    None
}

/// The limits of a route, each with its answer: a larger body 413, a slow app 504; an idle
/// connection or a slow request head is closed; a drain past its timeout closes tunnels.
/// Every field is optional on the wire (its default). The idle and header timeouts act before
/// a request is read, so an edge takes them from its (one) route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body passed on, in bytes (413 beyond).
    pub max_body: u64,
    /// Time the upstream has to begin its answer (504 after).
    pub upstream_timeout_ms: u64,
    /// A kept-alive client connection with no request is closed after this.
    pub idle_timeout_ms: u64,
    /// Time a client has to send a whole request head once begun.
    pub header_timeout_ms: u64,
    /// What a `drain` without `timeout_ms` waits for upstreams this route sent traffic to.
    pub drain_timeout_ms: u64,
    /// Strict-Transport-Security on TLS listeners (none yet: kept for them).
    pub hsts: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body: 100_000_000,
            upstream_timeout_ms: 60_000,
            idle_timeout_ms: 75_000,
            header_timeout_ms: 30_000,
            drain_timeout_ms: 30_000,
            hsts: false,
        }
    }
}

impl Limits {
    pub fn is_default(&self) -> bool {
        *self == Limits::default()
    }

    /// Every limit must be above 0. Fields are named as in a `set` request.
    pub fn validate(&self) -> Result<(), AdminError> {
        let fields = [
            ("max_body", self.max_body),
            ("upstream_timeout_ms", self.upstream_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("header_timeout_ms", self.header_timeout_ms),
            ("drain_timeout_ms", self.drain_timeout_ms),
        ];
        for (name, value) in fields {
            if value == 0 {
                return Err(AdminError::bad_request(
                    format!("limits.{name}"),
                    format!("{name} is 0"),
                    "a limit is 1 or more; leave it out for its default",
                ));
            }
        }
        Ok(())
    }
}

impl Route {
    /// Checks what serde cannot: a non-empty key, weights in range, no upstream twice, not too
    /// many upstreams. Fields are named as in a `set` request.
    pub fn validate(&self) -> Result<(), AdminError> {
        self.limits.validate()?;
        if self.key.owner.trim().is_empty() {
            return Err(AdminError::bad_request(
                "route.owner",
                "the route names no owner",
                "name the state dir of the app's server, e.g. \"route\":{\"owner\":\"/srv/tasks/.cutover\",\"env\":\"staging\"}",
            ));
        }
        if self.key.env.trim().is_empty() {
            return Err(AdminError::bad_request(
                "route.env",
                "the route names no environment",
                "name the environment, e.g. \"route\":{\"owner\":\"/srv/tasks/.cutover\",\"env\":\"staging\"}",
            ));
        }
        for (i, host) in self.hosts.iter().enumerate() {
            let plain = !host.is_empty()
                && host.len() <= 253
                && normal_host(host) == host.as_str()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.*".contains(&b));
            if !plain {
                return Err(AdminError::bad_request(
                    format!("hosts[{i}]"),
                    format!("{host:?} is not a lowercase host name"),
                    "send DNS names in lowercase, without port or trailing dot, e.g. \"tasks.example.com\"",
                ));
            }
            if self.hosts[..i].contains(host) {
                return Err(AdminError::bad_request(
                    format!("hosts[{i}]"),
                    format!("{host} is listed twice"),
                    "list each host once",
                ));
            }
        }
        if self.upstreams.len() > MAX_UPSTREAMS {
            return Err(AdminError::bad_request(
                "upstreams",
                format!(
                    "{} upstreams in one route, at most {MAX_UPSTREAMS}",
                    self.upstreams.len()
                ),
                "run fewer instances behind one route",
            ));
        }
        for (i, upstream) in self.upstreams.iter().enumerate() {
            if upstream.weight > MAX_WEIGHT {
                return Err(AdminError::bad_request(
                    format!("upstreams[{i}].weight"),
                    format!(
                        "weight {} of {} is out of range",
                        upstream.weight, upstream.addr
                    ),
                    format!(
                        "a weight is 0 (no new requests) to {MAX_WEIGHT}; weights are relative, \
                         e.g. 90 and 10"
                    ),
                ));
            }
            if self.upstreams[..i].iter().any(|u| u.addr == upstream.addr) {
                return Err(AdminError::bad_request(
                    format!("upstreams[{i}].addr"),
                    format!("{} is listed twice", upstream.addr),
                    "list each upstream once, with its whole weight",
                ));
            }
        }
        Ok(())
    }
}

/// What a route does with new requests instead of passing them on: answer that the app is
/// down for maintenance, or hold them until resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Hold {
    /// 503 with `Retry-After` and the message (an HTML page, or JSON for
    /// `Accept: application/json`).
    Maintenance {
        message: String,
        #[serde(default = "default_retry_after")]
        retry_after_s: u64,
    },
    /// New requests wait at the edge (a bounded queue; 503 beyond it) until the hold is lifted
    /// or `until_ms` (Unix time, milliseconds) passes, then go on.
    Pause { until_ms: u64 },
}

fn default_retry_after() -> u64 {
    60
}

/// The longest maintenance message accepted.
pub const MAX_MESSAGE: usize = 2000;

impl Hold {
    /// Whether the hold still applies at `now_ms` (Unix milliseconds).
    pub fn applies(&self, now_ms: u64) -> bool {
        match self {
            Hold::Maintenance { .. } => true,
            Hold::Pause { until_ms } => now_ms < *until_ms,
        }
    }

    pub fn validate(&self) -> Result<(), AdminError> {
        match self {
            Hold::Maintenance { message, .. } if message.len() > MAX_MESSAGE => {
                Err(AdminError::bad_request(
                    "hold.message",
                    format!("the message is {} bytes long", message.len()),
                    format!("say it in at most {MAX_MESSAGE} bytes"),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// A route's hold, as the routes file keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteHold {
    pub route: RouteKey,
    pub hold: Hold,
}

/// One admin request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// What the edge serves: [`Reply::Status`].
    Status,
    /// Replaces the upstreams of one route (the route is created if new): [`Reply::Set`]. The
    /// change is on disk before it takes effect.
    Set(Route),
    /// Waits until no request is in flight to `upstreams`, or `timeout_ms` passes (left out:
    /// the longest `drain_timeout_ms` of the routes that sent them traffic); then
    /// closes their tunnels (upgraded connections; WebSockets with a Close frame, 1001) and
    /// waits a few seconds for them to go: [`Reply::Drain`].
    Drain {
        upstreams: Vec<SocketAddr>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Puts a hold on a route's new requests, or lifts it (`hold` left out or null):
    /// [`Reply::Hold`]. Kept in the routes file; a `set` leaves it as it is.
    Hold {
        route: RouteKey,
        #[serde(default)]
        hold: Option<Hold>,
    },
    /// Whether a `set` of this route would be taken (its claim on the address and hosts, and
    /// the address can be listened on), changing nothing: [`Reply::Check`].
    Check(Route),
    /// Removes the routes of `owner` (only the one of `env` when given), their holds, and the
    /// listeners no route uses any more: [`Reply::Remove`]. An edge left with no route exits.
    Remove {
        owner: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        env: Option<String>,
    },
    /// Sent by a new edge process (an upgrade): the reply [`Reply::Handover`] carries the
    /// listening sockets (SCM_RIGHTS, in the same message); once the new edge serves them it
    /// sends the line `ready`, and this edge stops accepting, drains and exits. Changes are
    /// refused meanwhile.
    Handover,
    /// Stops taking connections, lets requests in flight finish, exits: [`Reply::Shutdown`],
    /// then the connection closes once the edge has stopped.
    Shutdown,
    /// Obtains a new certificate for `host` by ACME now (`cutover edge renew HOST`):
    /// [`Reply::Renew`]. The old one serves until the new one is there, and on if it fails.
    Renew { host: String },
}

impl Request {
    /// Every `op`, as on the wire.
    pub const OPS: [&'static str; 9] = [
        "status", "set", "check", "remove", "drain", "hold", "handover", "shutdown", "renew",
    ];

    /// This request's `op`.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Set(_) => "set",
            Request::Drain { .. } => "drain",
            Request::Hold { .. } => "hold",
            Request::Check(_) => "check",
            Request::Remove { .. } => "remove",
            Request::Handover => "handover",
            Request::Shutdown => "shutdown",
            Request::Renew { .. } => "renew",
        }
    }
}

/// One reply line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Status(ProxyStatus),
    Set {
        /// The generation now served (one more than before).
        generation: u64,
    },
    Drain(DrainOutcome),
    Hold {
        /// The generation now served.
        generation: u64,
    },
    /// The route would be taken.
    Check,
    Remove {
        /// The generation now served.
        generation: u64,
        /// How many routes the edge still serves (it exits when none is left).
        left: usize,
    },
    /// The listening sockets follow in the same message, in this order.
    Handover {
        listeners: Vec<SocketAddr>,
    },
    Shutdown,
    Renew {
        host: String,
        /// The new certificate's notAfter, seconds since the epoch.
        not_after: i64,
    },
    Error(AdminError),
}

/// What `status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyStatus {
    /// [`PROTOCOL`] of the edge that answered.
    pub protocol: u32,
    /// The cutover version of the edge's binary.
    #[serde(default)]
    pub version: String,
    /// The path the edge's binary was started from (absolute, symlinks resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<PathBuf>,
    /// That path now holds another file than the one the edge runs, or none: the binary was
    /// replaced (an install) or removed since the edge started.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub binary_replaced: bool,
    /// The edge is exiting (its last route was removed) or handing over to a new edge: wait
    /// for it to go, or for the new one to answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopping: bool,
    pub pid: u32,
    /// The addresses the edge listens on (the routes' `listen`) and what each is bound to
    /// (the real port of a `listen` with port 0).
    #[serde(default)]
    pub listeners: Vec<ListenerStatus>,
    /// Increments with every `set`; survives restarts.
    pub generation: u64,
    pub routes: Vec<RouteStatus>,
    /// Upstreams no route names any more with requests still in flight, and how many.
    pub draining: BTreeMap<SocketAddr, u64>,
    /// Requests waiting at the edge for a pause to end.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub held: u64,
    /// The hosts whose certificates come by ACME: until when each serves, and the last
    /// attempt's error while it stands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acme: Vec<crate::acme::HostState>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ProxyStatus {
    pub fn route(&self, key: &RouteKey) -> Option<&RouteStatus> {
        self.routes.iter().find(|r| &r.route == key)
    }

    /// The upstreams that get new requests of `key` (weight above 0).
    pub fn serving(&self, key: &RouteKey) -> Vec<SocketAddr> {
        self.route(key)
            .map(|r| {
                r.upstreams
                    .iter()
                    .filter(|u| u.weight > 0)
                    .map(|u| u.addr)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Requests in flight to `addr`, routed or draining.
    pub fn inflight(&self, addr: SocketAddr) -> u64 {
        let routed = self
            .routes
            .iter()
            .flat_map(|r| &r.upstreams)
            .find(|u| u.addr == addr)
            .map(|u| u.inflight);
        routed
            .or_else(|| self.draining.get(&addr).copied())
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerStatus {
    pub listen: SocketAddr,
    /// The address bound; `None` when it could not be (then `error` says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ProxyStatus {
    /// Where the edge really listens for `listen` (the bound port of port 0).
    pub fn bound(&self, listen: SocketAddr) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| l.listen == listen)
            .and_then(|l| l.bound)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStatus {
    pub route: RouteKey,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app: String,
    pub listen: SocketAddr,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    pub upstreams: Vec<UpstreamStatus>,
    /// The route's hold, while it applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamStatus {
    pub addr: SocketAddr,
    pub weight: u32,
    pub inflight: u64,
    /// Set while new requests skip the upstream because connecting to it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ejected: Option<Ejection>,
}

/// An upstream the edge could not connect to: new requests of its route go to the others
/// (while one of them is not ejected too) until `until_ms`; then one request tries it again,
/// and a failure ejects it for twice as long (10 s, 20 s, … up to 160 s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ejection {
    /// Unix milliseconds.
    pub until_ms: u64,
    /// Ejections in a row.
    pub times: u32,
    /// Why the last connect failed.
    pub error: String,
}

/// The result of a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainOutcome {
    /// No request was in flight to the drained upstreams any more.
    pub drained: bool,
    /// Requests still in flight when the drain gave up (0 when drained).
    pub remaining: u64,
    /// Tunnels (WebSockets and other upgraded connections) the drain closed at its timeout.
    #[serde(default)]
    pub closed: u64,
}

/// Why a request was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminError {
    pub code: ErrorCode,
    /// The request field at fault, e.g. `upstreams[1].weight`, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
    /// How to fix it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line is not a JSON object.
    NotJson,
    /// `op` names no request this edge knows.
    UnknownOp,
    /// A field is missing, unknown or out of range.
    BadRequest,
    /// The route is not one this edge serves.
    UnknownRoute,
    /// The request line is longer than the edge accepts.
    LineTooLong,
    /// The routes file could not be written, so the change was not made.
    NotSaved,
    /// Another app's route holds the address or a host (`field` says which).
    Claimed,
    /// The address cannot be listened on (in use by another program, or not this machine's).
    ListenFailed,
    /// The edge is exiting and takes no change.
    Stopping,
    /// ACME could not obtain the certificate (the message says why).
    Acme,
    /// A code of a newer edge.
    #[serde(other)]
    Other,
}

impl AdminError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> AdminError {
        AdminError {
            code,
            field: None,
            message: message.into(),
            hint: None,
        }
    }

    pub fn bad_request(
        field: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> AdminError {
        AdminError::new(ErrorCode::BadRequest, message)
            .field(field)
            .hint(hint)
    }

    pub fn field(mut self, field: impl Into<String>) -> AdminError {
        self.field = Some(field.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> AdminError {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for AdminError {}

/// One message as a protocol line: JSON and a newline.
pub fn to_line<T: Serialize>(message: &T) -> Vec<u8> {
    // These types hold only strings, numbers and addresses (map keys included): they always
    // serialize.
    let mut line = serde_json::to_vec(message).expect("a protocol message serializes");
    line.push(b'\n');
    line
}

/// Reads one request line, or says precisely why it is not one.
pub fn parse_request(line: &[u8]) -> Result<Request, AdminError> {
    use serde_json::{Map, Value};
    let object: Map<String, Value> = serde_json::from_slice(line).map_err(|e| {
        AdminError::new(
            ErrorCode::NotJson,
            format!("the request is not a JSON object: {e}"),
        )
        .hint("send one JSON object per line, e.g. {\"op\":\"status\"}")
    })?;
    let ops = Request::OPS.join(", ");
    // The op first, to tell an unknown op from a bad field of a known one.
    match object.get("op") {
        Some(Value::String(op)) if Request::OPS.contains(&op.as_str()) => {}
        Some(Value::String(op)) => {
            return Err(
                AdminError::new(ErrorCode::UnknownOp, format!("unknown op `{op}`"))
                    .field("op")
                    .hint(format!("the ops are {ops}")),
            )
        }
        Some(other) => {
            return Err(AdminError::bad_request(
                "op",
                format!("op is {other}, not a string"),
                format!("the ops are {ops}"),
            ))
        }
        None => {
            return Err(AdminError::bad_request(
                "op",
                "the request has no op",
                format!("the ops are {ops}"),
            ))
        }
    }
    serde_json::from_value::<Request>(Value::Object(object)).map_err(|e| {
        AdminError::new(ErrorCode::BadRequest, e.to_string()).hint(
            "a route is {\"owner\":\"…\",\"env\":\"…\"} with \"listen\":\"127.0.0.1:8001\", an upstream {\"addr\":\"127.0.0.1:4000\",\"weight\":100}",
        )
    })
}

/// Reads one reply line.
pub fn parse_reply(line: &str) -> Result<Reply, String> {
    if line.trim().is_empty() {
        return Err("the connection closed without a reply".to_string());
    }
    serde_json::from_str(line).map_err(|e| e.to_string())
}
