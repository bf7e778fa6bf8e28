//! Build, push, pull by digest, registry digest — against the real engine and a real registry.

use std::time::Instant;

use cutover_docker::{
    build_image, image_exists, list_images, pull_digest, push, registry_digest, remove_image,
    BuildSpec, DockerError, Engine, EngineKind, RegistryAccess,
};

use crate::require;
use crate::support::*;

/// A push without a login, to a registry reached as any loopback one is.
async fn push_anon(engine: &Engine, repo: &str, tag: &str) -> Result<String, DockerError> {
    push(
        engine,
        repo,
        tag,
        None,
        &RegistryAccess::default(),
        &mut |_| {},
    )
    .await
}

/// The digest of `name:tag` in `registry`, asked without a login.
async fn digest_anon(registry: &str, name: &str, tag: &str) -> Result<Option<String>, DockerError> {
    registry_digest(registry, name, tag, None, &RegistryAccess::default()).await
}

#[tokio::test]
async fn build_push_remove_pull_by_digest() {
    let engine = require!(engine().await);
    let reg = require!(registry());
    let t = token("bppd");
    let mut clean = Cleanup::new(&engine, &t);
    let repo = format!("{}/cutover-test-{t}", reg.addr);
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let tags = vec![format!("{repo}:{sha}"), format!("{repo}:latest")];
    clean.images.extend(tags.clone());

    let (id, build_time) = build_app(&engine, &t, &tags).await;
    assert!(id.starts_with("sha256:"), "{id}");
    assert!(image_exists(&engine, &tags[0]).await.unwrap());
    assert!(image_exists(&engine, &tags[1]).await.unwrap());

    let t0 = Instant::now();
    let mut lines = Vec::new();
    let digest = push(
        &engine,
        &repo,
        sha,
        None,
        &RegistryAccess::default(),
        &mut |l| lines.push(l),
    )
    .await
    .unwrap();
    let push_time = t0.elapsed();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    assert!(!lines.is_empty());
    clean.images.push(format!("{repo}@{digest}"));

    // The registry itself agrees.
    let name = format!("cutover-test-{t}");
    let now = digest_anon(&reg.addr, &name, sha).await.unwrap();
    assert_eq!(now.as_deref(), Some(digest.as_str()));
    assert_eq!(
        digest_anon(&reg.addr, &name, "never-pushed").await.unwrap(),
        None
    );

    // Gone locally, back by digest only.
    for tag in &tags {
        remove_image(&engine, tag).await.unwrap();
    }
    remove_image(&engine, &format!("{repo}@{digest}"))
        .await
        .unwrap();
    assert!(
        !image_exists(&engine, &id).await.unwrap(),
        "image {id} still there"
    );
    remove_image(&engine, &tags[0]).await.unwrap(); // idempotent

    let t0 = Instant::now();
    pull_digest(&engine, &repo, &digest, None).await.unwrap();
    let pull_time = t0.elapsed();
    let by_digest = format!("{repo}@{digest}");
    assert!(image_exists(&engine, &by_digest).await.unwrap());
    let pulled = engine.docker().inspect_image(&by_digest).await.unwrap();
    assert_eq!(
        pulled.id.as_deref(),
        Some(id.as_str()),
        "same image, same id"
    );

    let listed = list_images(&engine, &repo).await.unwrap();
    assert!(
        listed
            .iter()
            .any(|i| i.id == id && i.digests.contains(&by_digest)),
        "{listed:?}"
    );
    eprintln!(
        "TIMING build {build_time:?} push {push_time:?} pull-by-digest {pull_time:?} (engine {} API {})",
        engine.endpoint, engine.api_version
    );
}

#[tokio::test]
async fn a_failing_dockerfile_step_shows_its_output() {
    let engine = require!(engine().await);
    let t = token("failing-build");
    let mut clean = Cleanup::new(&engine, &t);
    let tag = format!("cutover-test-{t}:x");
    clean.images.push(tag.clone());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY no-such-file /x\n",
    )
    .unwrap();
    let mut lines = Vec::new();
    let err = build_image(
        &engine,
        BuildSpec {
            context_dir: dir.path(),
            dockerfile: "Dockerfile",
            tags: vec![tag.clone()],
        },
        &mut |l| lines.push(l),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DockerError::BuildFailed { .. }), "{msg}");
    assert!(msg.contains("no-such-file"), "{msg}");
    assert!(
        msg.contains("COPY no-such-file"),
        "the failing step is shown: {msg}"
    );
    assert!(!lines.is_empty());

    // A Dockerfile that is not there is a context error naming it.
    let err = build_image(
        &engine,
        BuildSpec {
            context_dir: dir.path(),
            dockerfile: "Nope.Dockerfile",
            tags: vec![tag],
        },
        &mut |_| {},
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("has no Nope.Dockerfile"), "{err}");
}

/// Someone re-pushes `:<sha>` with other bytes: the registry's digest for the tag moves, and
/// `registry_digest` is how a deploy notices.
#[tokio::test]
async fn repushing_a_tag_with_other_bytes_moves_the_registry_digest() {
    let engine = require!(engine().await);
    let reg = require!(registry());
    let t = token("tag-moved");
    let mut clean = Cleanup::new(&engine, &t);
    let name = format!("cutover-test-{t}");
    let repo = format!("{}/{name}", reg.addr);
    let tag = format!("{repo}:abc");
    clean.images.push(tag.clone());

    build_app(&engine, &format!("{t}-1"), std::slice::from_ref(&tag)).await;
    let d1 = push_anon(&engine, &repo, "abc").await.unwrap();
    build_app(&engine, &format!("{t}-2"), std::slice::from_ref(&tag)).await;
    let d2 = push_anon(&engine, &repo, "abc").await.unwrap();
    clean.images.push(format!("{repo}@{d1}"));
    clean.images.push(format!("{repo}@{d2}"));
    assert_ne!(d1, d2);
    let now = digest_anon(&reg.addr, &name, "abc").await.unwrap().unwrap();
    assert_eq!(now, d2);
    assert_ne!(
        now, d1,
        "the ledger's digest d1 no longer matches the registry"
    );
}

#[tokio::test]
async fn push_to_an_unreachable_registry_says_so() {
    let engine = require!(engine().await);
    let t = token("push-unreachable");
    let mut clean = Cleanup::new(&engine, &t);
    let port = cutover_runtime::free_port().unwrap();
    let repo = format!("127.0.0.1:{port}/cutover-test-{t}");
    let tag = format!("{repo}:v1");
    clean.images.push(tag.clone());
    build_app(&engine, &t, std::slice::from_ref(&tag)).await;
    let err = push_anon(&engine, &repo, "v1").await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, DockerError::RegistryUnreachable { .. }),
        "{msg}"
    );
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");

    let err = digest_anon(&format!("127.0.0.1:{port}"), "x", "v1")
        .await
        .unwrap_err();
    assert!(
        matches!(err, DockerError::RegistryUnreachable { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_registry_that_refuses_the_push_is_named_and_nothing_is_recorded() {
    let engine = require!(engine().await);
    let dir = tempfile::tempdir().unwrap();
    let readonly = "  maintenance:\n    readonly:\n      enabled: true\n";
    let (mut child, addr) = match spawn_registry_with(dir.path(), readonly) {
        Ok(found) => found,
        Err(reason) => return skip(&reason),
    };
    let t = token("push-refused");
    let mut clean = Cleanup::new(&engine, &t);
    let repo = format!("{addr}/cutover-test-{t}");
    let tag = format!("{repo}:v1");
    clean.images.push(tag.clone());
    build_app(&engine, &t, std::slice::from_ref(&tag)).await;
    let err = push_anon(&engine, &repo, "v1").await.unwrap_err();
    let msg = err.to_string();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !matches!(err, DockerError::RegistryUnreachable { .. }),
        "refused is not unreachable: {msg}"
    );
    assert!(msg.contains(&addr), "the error names the registry: {msg}");
    assert!(
        msg.contains("does not accept pushes"),
        "the error says what happened: {msg}"
    );
    assert_eq!(
        digest_anon(&addr, &format!("cutover-test-{t}"), "v1")
            .await
            .ok()
            .flatten(),
        None
    );
}

#[tokio::test]
async fn pulling_a_digest_the_registry_does_not_have_is_not_found() {
    let engine = require!(engine().await);
    let reg = require!(registry());
    let repo = format!("{}/cutover-test-nothing-here", reg.addr);
    let digest = format!("sha256:{}", "0".repeat(64));
    let err = pull_digest(&engine, &repo, &digest, None)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DockerError::NotFound { .. }), "{msg}");
    assert!(msg.contains(&digest), "{msg}");

    // Pushing what was never built.
    let err = push_anon(&engine, &repo, "never-built").await.unwrap_err();
    assert!(matches!(err, DockerError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("never-built"), "{err}");

    // A tag is refused: deploys pull by digest only.
    let err = pull_digest(&engine, &repo, "latest", None)
        .await
        .unwrap_err();
    assert!(matches!(err, DockerError::InvalidReference { .. }), "{err}");

    // Unreachable registry on pull.
    let port = cutover_runtime::free_port().unwrap();
    let err = pull_digest(&engine, &format!("127.0.0.1:{port}/x"), &digest, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DockerError::RegistryUnreachable { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_engine_names_the_socket_and_the_fix() {
    let err = Engine::connect(Some("unix:///nonexistent.sock"), EngineKind::Docker)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DockerError::Unreachable { .. }), "{msg}");
    assert!(msg.contains("unix:///nonexistent.sock"), "{msg}");
    assert!(
        msg.contains("DOCKER_HOST") && msg.contains("[docker] host"),
        "{msg}"
    );

    // A socket path that exists but is no engine.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("not-docker.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    drop(_listener);
    let host = format!("unix://{}", sock.display());
    let err = Engine::connect(Some(&host), EngineKind::Podman)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&host) && err.contains("podman engine"),
        "{err}"
    );
}

/// Placement (`prepare_image`): pulls by digest when missing, refuses a tag that moved under us
/// and a version that was never published.
#[tokio::test]
async fn prepare_pulls_by_digest_and_refuses_a_moved_tag() {
    use cutover_docker::{prepare_image, ImagePull};
    let engine = require!(engine().await);
    let reg = require!(registry());
    let t = token("prepare");
    let mut clean = Cleanup::new(&engine, &t);
    let name = format!("cutover-test-{t}");
    let repo = format!("{}/{name}", reg.addr);
    let sha = "feedfacefeedfacefeedfacefeedfacefeedface";
    let tag = format!("{repo}:{sha}");
    clean.images.push(tag.clone());
    build_app(&engine, &format!("{t}-1"), std::slice::from_ref(&tag)).await;
    let d1 = push_anon(&engine, &repo, sha).await.unwrap();
    clean.images.push(format!("{repo}@{d1}"));
    remove_image(&engine, &tag).await.unwrap();
    remove_image(&engine, &format!("{repo}@{d1}"))
        .await
        .unwrap();

    let pull = ImagePull {
        reference: format!("{repo}@{d1}"),
        repository: repo.clone(),
        digest: Some(d1.clone()),
        tag: sha.into(),
        credentials: None,
        access: RegistryAccess::default(),
    };
    prepare_image(&engine, &pull).await.unwrap();
    assert!(image_exists(&engine, &pull.reference).await.unwrap());
    prepare_image(&engine, &pull).await.unwrap(); // already there: no pull, still checked

    // Someone re-pushes :<sha> with other bytes.
    build_app(&engine, &format!("{t}-2"), std::slice::from_ref(&tag)).await;
    let d2 = push_anon(&engine, &repo, sha).await.unwrap();
    clean.images.push(format!("{repo}@{d2}"));
    let err = prepare_image(&engine, &pull).await.unwrap_err().to_string();
    assert!(
        err.contains(&d1) && err.contains(&d2) && err.contains("re-pushed"),
        "{err}"
    );

    // Never published, not built here.
    let never = ImagePull {
        digest: None,
        reference: format!("{repo}:never"),
        tag: "never".into(),
        ..pull.clone()
    };
    let err = prepare_image(&engine, &never)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("never published"), "{err}");

    // Published once, tag gone from the registry (another name).
    let gone = ImagePull {
        repository: format!("{}/cutover-test-gone-{t}", reg.addr),
        ..pull
    };
    let err = prepare_image(&engine, &gone).await.unwrap_err().to_string();
    assert!(err.contains("no longer has the tag"), "{err}");
}
