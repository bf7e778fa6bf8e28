//! Artifacts shipped by digest (for a CLI on another machine): it asks which blobs of a bundle
//! this server lacks, uploads only those — each verified against its digest on arrival, a
//! truncated or corrupted one stores nothing — and then the manifest, which is taken only when
//! every blob is here and its entries hash to its digest. Nothing is rebuilt here.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cutover_api::{BlobsMissing, BlobsQuery, Refusal};
use cutover_artifact::{Artifact, ArtifactStore};
use futures_util::StreamExt as _;
use tokio::io::AsyncWriteExt as _;

use crate::api::Shared;

/// The largest blob one upload may carry.
const MAX_BLOB: u64 = 4 << 30;

fn refuse(status: StatusCode, message: String, hint: Option<String>) -> Response {
    (status, Json(Refusal::new(message, hint))).into_response()
}

fn store(app: &Shared) -> Result<ArtifactStore, String> {
    ArtifactStore::open(&app.state.artifacts()).map_err(|e| e.to_string())
}

/// `POST /v1/blobs/missing`: which of these digests the server lacks.
pub async fn missing(State(app): State<Shared>, Json(query): Json<BlobsQuery>) -> Response {
    let store = match store(&app) {
        Ok(s) => s,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e, None),
    };
    let missing = store.missing_blobs(query.digests.iter().map(String::as_str));
    Json(BlobsMissing { missing }).into_response()
}

/// `PUT /v1/blobs/{digest}`: one blob, its bytes as the body.
pub async fn put_blob(
    State(app): State<Shared>,
    Path(digest): Path<String>,
    body: Body,
) -> Response {
    let store = match store(&app) {
        Ok(s) => s,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e, None),
    };
    if store.missing_blobs([digest.as_str()]).is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    // Spooled to a file first (bounded memory), then verified and stored.
    let spool =
        store
            .dir()
            .join("tmp")
            .join(format!("upload-{}-{}", std::process::id(), rand_suffix()));
    let received = spool_body(body, &spool).await;
    let result = match received {
        Ok(()) => {
            let (spool, digest) = (spool.clone(), digest.clone());
            tokio::task::spawn_blocking(move || {
                let mut file = std::fs::File::open(&spool)?;
                store
                    .put_blob(&digest, &mut file)
                    .map_err(std::io::Error::other)
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            .map_err(|e| e.to_string())
        }
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_file(&spool).await;
    match result {
        Ok(_) => StatusCode::CREATED.into_response(),
        Err(e) => refuse(StatusCode::UNPROCESSABLE_ENTITY, e, None),
    }
}

async fn spool_body(body: Body, path: &std::path::Path) -> Result<(), String> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("the upload broke off: {e}"))?;
        total += chunk.len() as u64;
        if total > MAX_BLOB {
            return Err(format!("a blob may be at most {} GiB", MAX_BLOB >> 30));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    file.flush().await.map_err(|e| e.to_string())
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// `PUT /v1/artifacts`: a bundle's manifest (as `cutover-artifact` stores it), once its blobs
/// are here.
pub async fn put_artifact(State(app): State<Shared>, Json(artifact): Json<Artifact>) -> Response {
    let store = match store(&app) {
        Ok(s) => s,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e, None),
    };
    let name = artifact.short_name();
    match tokio::task::spawn_blocking(move || store.import(&artifact)).await {
        Ok(Ok(())) => (
            StatusCode::CREATED,
            Json(serde_json::json!({ "artifact": name })),
        )
            .into_response(),
        Ok(Err(e)) => refuse(StatusCode::UNPROCESSABLE_ENTITY, e.to_string(), None),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
    }
}
