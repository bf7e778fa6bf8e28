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
    let store = ctx.state.artifacts().join("blobs/sha256");
    let mut bytes_sent = 0u64;
    for digest in &answer.missing {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let blob = tokio::fs::read(store.join(hex)).await.map_err(|e| {
            anyhow::anyhow!("reading blob {digest} of {}: {e}", artifact.short_name())
        })?;
        bytes_sent += blob.len() as u64;
        client
            .put_bytes(&format!("/v1/blobs/{digest}"), blob)
            .await?;
    }
    client
        .call::<serde_json::Value>("PUT", "/v1/artifacts", Some(&artifact))
        .await?;
    progress.step(&format!(
        "shipped {} to {}: {} of {} blobs ({} bytes) sent, the rest were there, in {:.1} s",
        artifact.short_name(),
        client.server(),
        answer.missing.len(),
        digests.len(),
        bytes_sent,
        started.elapsed().as_secs_f64()
    ));
    Ok(artifact)
}
