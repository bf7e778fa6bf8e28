//! One edge for the machine: routes of several apps (owners) on one address, told apart by
//! `Host`; claims refused naming their owner; `remove` takes only an owner's routes.

mod support;

use cutover_proxy::protocol::{ErrorCode, DEFAULT_WEIGHT};
use cutover_proxy::{ProxyError, Route, RouteKey, Upstream};
use hyper::StatusCode;

use support::*;

fn route(
    owner: &str,
    env: &str,
    listen: std::net::SocketAddr,
    hosts: &[&str],
    to: std::net::SocketAddr,
) -> Route {
    let mut route = Route::new(RouteKey::new(owner, env), listen);
    route.app = owner
        .trim_start_matches("/srv/")
        .trim_end_matches("/.cutover")
        .to_string();
    route.hosts = hosts.iter().map(|h| h.to_string()).collect();
    route.upstreams = vec![Upstream::new(to, DEFAULT_WEIGHT)];
    route
}

async fn get_host(addr: std::net::SocketAddr, host: &str) -> (u16, String) {
    let answer = exchange(
        addr,
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    let status = answer[9..12].parse().unwrap();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_apps_share_an_address_by_host_and_an_unknown_host_gets_a_404_naming_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // The support's route stays on its own address.
    let proxy = Proxy::start(dir.path(), "elsewhere").await;
    let shared = free_addr();
    let (tasks, blog) = (upstream("tasks").await, upstream("blog").await);
    proxy
        .client
        .set(route(
            "/srv/tasks/.cutover",
            "production",
            shared,
            &["tasks.example.com"],
            tasks,
        ))
        .await
        .unwrap();
    proxy
        .client
        .set(route(
            "/srv/blog/.cutover",
            "production",
            shared,
            &["blog.example.com", "*.blog.example.com"],
            blog,
        ))
        .await
        .unwrap();

    assert_eq!(
        get_host(shared, "tasks.example.com").await,
        (200, "tasks".into())
    );
    assert_eq!(
        get_host(shared, "TASKS.example.com.:80").await,
        (200, "tasks".into())
    );
    assert_eq!(
        get_host(shared, "blog.example.com").await,
        (200, "blog".into())
    );
    assert_eq!(
        get_host(shared, "www.blog.example.com").await,
        (200, "blog".into())
    );
    let (status, body) = get_host(shared, "other.example.com").await;
    assert_eq!(status, 404);
    for internal in ["tasks", "blog", "production", "/srv", "cutover"] {
        assert!(!body.contains(internal), "the 404 names {internal}: {body}");
    }
    let status = proxy.client.status().await.unwrap();
    assert_eq!(status.listeners.len(), 2, "{status:?}");

    // Another app claiming a host: refused, naming the owner; nothing changes.
    let before = proxy.client.status().await.unwrap();
    let thief = route(
        "/srv/thief/.cutover",
        "production",
        shared,
        &["new.example.com", "tasks.example.com"],
        blog,
    );
    for refused in [
        proxy.client.check(thief.clone()).await.unwrap_err(),
        proxy.client.set(thief).await.unwrap_err(),
    ] {
        let ProxyError::Refused { error } = &refused else {
            panic!("{refused}")
        };
        assert_eq!(error.code, ErrorCode::Claimed);
        assert_eq!(error.field.as_deref(), Some("hosts"));
        assert!(error.message.contains("tasks.example.com"), "{error}");
        assert!(
            error
                .message
                .contains("tasks (state dir /srv/tasks/.cutover), environment production"),
            "{error}"
        );
        assert!(
            error
                .hint
                .as_deref()
                .unwrap()
                .contains("/srv/tasks/.cutover"),
            "{error}"
        );
    }
    // A route without hosts on a shared address: refused.
    let hostless = route("/srv/thief/.cutover", "production", shared, &[], blog);
    let refused = proxy.client.set(hostless).await.unwrap_err();
    assert!(
        matches!(&refused, ProxyError::Refused { error } if error.code == ErrorCode::Claimed && error.field.as_deref() == Some("hosts")),
        "{refused}"
    );
    // Hosts on an address another app has for every host: refused.
    let onto = route(
        "/srv/thief/.cutover",
        "production",
        proxy.addr,
        &["x.example.com"],
        blog,
    );
    let refused = proxy.client.set(onto).await.unwrap_err();
    assert!(
        refused.to_string().contains("is taken for every host by"),
        "{refused}"
    );
    assert_eq!(proxy.client.status().await.unwrap(), before);

    // The same app's staging and production on one address by host.
    proxy
        .client
        .set(route(
            "/srv/tasks/.cutover",
            "staging",
            shared,
            &["staging.tasks.example.com"],
            blog,
        ))
        .await
        .unwrap();
    assert_eq!(
        get_host(shared, "staging.tasks.example.com").await,
        (200, "blog".into())
    );

    // `remove` of one app leaves the other serving; the last route on an address closes it.
    assert_eq!(
        proxy
            .client
            .remove("/srv/tasks/.cutover", None)
            .await
            .unwrap(),
        2
    );
    assert_eq!(get_host(shared, "tasks.example.com").await.0, 404);
    assert_eq!(
        get_host(shared, "blog.example.com").await,
        (200, "blog".into())
    );
    assert_eq!(
        proxy
            .client
            .remove("/srv/blog/.cutover", Some("production"))
            .await
            .unwrap(),
        1
    );
    let status = proxy.client.status().await.unwrap();
    assert_eq!(status.listeners.len(), 1, "{status:?}");
    assert!(
        tokio::net::TcpStream::connect(shared).await.is_err(),
        "{shared} still listens"
    );
    assert_eq!(
        get(&fresh_client(), &proxy.url("/")).await.unwrap().0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // The last route removed: the edge stops.
    assert_eq!(proxy.client.remove(&proxy.owner, None).await.unwrap(), 0);
    let thread = proxy.thread;
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!proxy.options.pid_file.exists());
}
