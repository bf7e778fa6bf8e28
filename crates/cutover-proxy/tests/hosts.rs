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

/// An upstream that answers every request with `name` and counts the requests it read.
async fn counting_upstream(
    name: &'static str,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut pending = Vec::new();
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    // One answer per request head read (bodies here are empty or chunked
                    // with no data).
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
                            name.len()
                        );
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// With host routing, the requests the edge must refuse decide which app a request reaches:
/// two `Host` headers naming two apps, a `Content-Length` beside `Transfer-Encoding` whose
/// body hides a request for the other app, and a malformed chunked body. None of them reaches
/// the other app.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_refused_at_the_edge_reach_neither_app_on_a_shared_address() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "elsewhere").await;
    let shared = free_addr();
    let ((tasks, tasks_seen), (blog, blog_seen)) = (
        counting_upstream("tasks").await,
        counting_upstream("blog").await,
    );
    for (owner, host, to) in [
        ("/srv/tasks/.cutover", "tasks.example.com", tasks),
        ("/srv/blog/.cutover", "blog.example.com", blog),
    ] {
        proxy
            .client
            .set(route(owner, "production", shared, &[host], to))
            .await
            .unwrap();
    }

    // Two Host headers, one per app: 400, and neither app sees it.
    let answer = exchange(
        shared,
        b"GET / HTTP/1.1\r\nHost: tasks.example.com\r\nHost: blog.example.com\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // Content-Length beside Transfer-Encoding, the length covering a request for the other
    // app: the chunked body ends at `0`, what follows is never read as a request, and the
    // connection closes after the one answer.
    let smuggled = "GET / HTTP/1.1\r\nHost: blog.example.com\r\n\r\n";
    let body = format!("0\r\n\r\n{smuggled}");
    let raw = format!(
        "POST / HTTP/1.1\r\nHost: tasks.example.com\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        body.len()
    );
    let answer = exchange(shared, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(!answer.contains("blog"), "{answer}");

    // A malformed chunked body for one app: 400 to the client (not 502), the other app
    // untouched.
    let answer = exchange(
        shared,
        b"POST / HTTP/1.1\r\nHost: tasks.example.com\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(blog_seen.load(SeqCst), 0, "the other app saw a request");
    assert!(tasks_seen.load(SeqCst) <= 2, "{}", tasks_seen.load(SeqCst));
    // And plain requests still reach each app.
    assert_eq!(
        get_host(shared, "blog.example.com").await,
        (200, "blog".into())
    );
    assert_eq!(blog_seen.load(SeqCst), 1);
    proxy.stop().await;
}
