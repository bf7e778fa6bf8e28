//! Shipping a built bundle to a remote server by digest: only the blobs it lacks travel, each
//! verified there on arrival, then the manifest. An image goes through the registry (published
//! here first if it never was), and the remote server pulls it by digest.

use std::time::Instant;

use cutover_api::{BlobsMissing, BlobsQuery};
use cutover_build::Artifact;

use crate::client::Client;
use crate::context::Context;
use crate::output::Renderer;

/// Makes `artifact` deployable on `client`'s server; returns it (with its registry digest
/// once published).
pub async fn ship(
    client: &Client,
    ctx: &Context,
    artifact: Artifact,
    progress: &Renderer,
) -> anyhow::Result<Artifact> {
    let artifact = match &artifact.image {
        Some(image) if image.registry_digest.is_none() => {
            progress.step("publishing the image first: the remote server pulls it by digest");
            cutover_build::publish(&ctx.root, &ctx.state, artifact, None, &|line| {
                progress.line(&line)
            })
            .await?
        }
        _ => artifact,
    };
    let store = ctx.state.artifacts().join("blobs/sha256");
    send(client, &artifact, progress, |digest| {
        let hex = digest.strip_prefix("sha256:").unwrap_or(&digest);
        let path = store.join(hex);
        let name = artifact.short_name();
        async move {
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| anyhow::anyhow!("reading blob {digest} of {name}: {e}"))?;
            let len = file.metadata().await?.len();
            let stream = tokio_util::io::ReaderStream::new(file);
            Ok((cutover_http::reqwest::Body::wrap_stream(stream), len))
        }
    })
    .await?;
    Ok(artifact)
}

/// Relays an artifact of one remote server to another, digest for digest (a promotion across
/// servers): the blobs the target lacks stream from the source through this process to the
/// target, which verifies each on arrival, then the manifest.
pub async fn relay(
    from: &Client,
    to: &Client,
    app: &str,
    version: &str,
    progress: &Renderer,
) -> anyhow::Result<Artifact> {
    let artifact: Artifact = from.get(&format!("/v1/artifacts/{app}/{version}")).await?;
    send(to, &artifact, progress, |digest| async move {
        from.get_blob(&format!("/v1/blobs/{digest}")).await
    })
    .await?;
    Ok(artifact)
}

/// Sends `artifact` to `client`'s server: asks which blobs it lacks, streams only those (each
/// from `blob`), then the manifest, which the server takes only when every blob is there and
/// its entries hash to its digest.
async fn send<F, Fut>(
    client: &Client,
    artifact: &Artifact,
    progress: &Renderer,
    blob: F,
) -> anyhow::Result<()>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(cutover_http::reqwest::Body, u64)>>,
{
    let started = Instant::now();
    let mut digests: Vec<String> = artifact.files.iter().map(|f| f.digest.clone()).collect();
    digests.sort();
    digests.dedup();
    let answer: BlobsMissing = client
        .call(
            "POST",
            "/v1/blobs/missing",
            Some(&BlobsQuery {
                digests: digests.clone(),
            }),
        )
        .await?;
    let mut bytes_sent = 0u64;
    for (n, digest) in answer.missing.iter().enumerate() {
        let (body, len) = blob(digest.clone()).await?;
        if answer.missing.len() > 1 {
            progress.line(&cutover_api::Line::detail(format!(
                "blob {} of {}: {digest} ({len} bytes)",
                n + 1,
                answer.missing.len()
            )));
        }
        client
            .put_blob(&format!("/v1/blobs/{digest}"), body, len)
            .await?;
        bytes_sent += len;
    }
    client
        .call::<serde_json::Value>("PUT", "/v1/artifacts", Some(artifact))
        .await?;
    progress.step(&format!(
        "shipped {} to {}: {} of {} blobs ({} bytes) sent, the rest were there, in {:.2} s",
        artifact.short_name(),
        client.server(),
        answer.missing.len(),
        digests.len(),
        bytes_sent,
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}
