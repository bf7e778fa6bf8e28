//! Holds on a route over real sockets: maintenance answers 503 with the message, a pause keeps
//! requests waiting at the edge until it is lifted or runs out.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cutover_proxy::protocol::{ErrorCode, Hold};
use cutover_proxy::{ProxyError, RouteKey};
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};

use support::*;

fn in_ms(ms: u64) -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(now.as_millis()).unwrap() + ms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn maintenance_answers_503_with_the_message_survives_a_restart_and_ends() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "upkeep").await;
    let app = upstream("app").await;
    proxy.switch(&[app]).await;
    let hold = Hold::Maintenance {
        message: "Back at <noon> & later".into(),
        retry_after_s: 120,
    };
    proxy
        .client
        .hold(proxy.route(), Some(hold.clone()))
        .await
        .unwrap();
    let client = fresh_client();
    let response = client
        .request(
            Request::get(proxy.url("/"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "120");
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = response.into_body().collect().await.unwrap().to_bytes();
    let page = String::from_utf8_lossy(&page);
    assert!(page.contains("Back at &lt;noon&gt; &amp; later"), "{page}");

    let response = client
        .request(
            Request::get(proxy.url("/tasks"))
                .header("accept", "application/json")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error"], "maintenance");
    assert_eq!(json["message"], "Back at <noon> & later");

    let status = proxy.client.status().await.unwrap();
    assert_eq!(status.routes[0].hold, Some(hold.clone()));

    // The hold is on disk: a restarted edge keeps it, with the routes.
    proxy.stop().await;
    let proxy = Proxy::start(dir.path(), "upkeep").await;
    assert_eq!(get(&client, &proxy.url("/")).await.unwrap().0, 503);
    // A switch leaves it as it is.
    proxy.switch(&[app]).await;
    assert_eq!(get(&client, &proxy.url("/")).await.unwrap().0, 503);

    proxy.client.hold(proxy.route(), None).await.unwrap();
    assert_eq!(
        get(&client, &proxy.url("/")).await.unwrap(),
        (StatusCode::OK, "app".into())
    );
    assert_eq!(proxy.client.status().await.unwrap().routes[0].hold, None);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pause_holds_requests_until_resumed_or_until_it_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "pause").await;
    proxy.switch(&[upstream("app").await]).await;
    let pause = Hold::Pause {
        until_ms: in_ms(30_000),
    };
    proxy.client.hold(proxy.route(), Some(pause)).await.unwrap();
    let started = Instant::now();
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let url = proxy.url("/");
            tokio::spawn(async move { get(&fresh_client(), &url).await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.client.status().await.unwrap().held < 3 {
        assert!(Instant::now() < deadline, "the requests were not held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "a held request was answered"
    );
    proxy.client.hold(proxy.route(), None).await.unwrap();
    for w in waiting {
        assert_eq!(w.await.unwrap().unwrap(), (StatusCode::OK, "app".into()));
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(proxy.client.status().await.unwrap().held, 0);

    // A pause that runs out lets its requests go by itself.
    let pause = Hold::Pause {
        until_ms: in_ms(400),
    };
    proxy.client.hold(proxy.route(), Some(pause)).await.unwrap();
    let started = Instant::now();
    assert_eq!(
        get(&fresh_client(), &proxy.url("/")).await.unwrap().0,
        StatusCode::OK
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_holds_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "holds").await;
    proxy.switch(&[upstream("app").await]).await;
    let too_long = Hold::Maintenance {
        message: "x".repeat(3000),
        retry_after_s: 60,
    };
    match proxy.client.hold(proxy.route(), Some(too_long)).await {
        Err(ProxyError::Refused { error, .. }) => {
            assert_eq!(error.code, ErrorCode::BadRequest);
            assert_eq!(error.field.as_deref(), Some("hold.message"));
        }
        other => panic!("{other:?}"),
    }
    match proxy
        .client
        .hold(
            RouteKey::new(&proxy.owner, "elsewhere"),
            Some(Hold::Pause { until_ms: u64::MAX }),
        )
        .await
    {
        Err(ProxyError::Refused { error, .. }) => assert_eq!(error.code, ErrorCode::UnknownRoute),
        other => panic!("{other:?}"),
    }
    assert_eq!(proxy.client.status().await.unwrap().generation, 2);
    assert_eq!(
        get(&fresh_client(), &proxy.url("/")).await.unwrap().0,
        StatusCode::OK
    );
    proxy.stop().await;
}
