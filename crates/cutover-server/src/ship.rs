//! Artifacts shipped by digest (for a CLI on another machine): it asks which blobs of a bundle
//! this server lacks, uploads only those — each verified against its digest on arrival, a
//! truncated or corrupted one stores nothing — and then the manifest, which is taken only when
//! every blob is here and its entries hash to its digest. Nothing is rebuilt here.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use cutover_api::{BlobsMissing, BlobsQuery, PassedView, Refusal};
use cutover_artifact::{Artifact, ArtifactStore};
use futures_util::StreamExt as _;

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
    // The body streams into the store, which hashes it as it writes and keeps it only if it
    // is the blob it claims to be; a bounded channel keeps memory flat.
    let (chunks, incoming) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    let stored = tokio::task::spawn_blocking(move || {
        let mut reader = ChunkReader {
            incoming,
            current: Bytes::new(),
        };
        store.put_blob(&digest, &mut reader)
    });
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| std::io::Error::other(format!("the upload broke off: {e}")));
        if let Ok(data) = &chunk {
            total += data.len() as u64;
        }
        let chunk = match chunk {
            Ok(_) if total > MAX_BLOB => Err(std::io::Error::other(format!(
                "a blob may be at most {} GiB",
                MAX_BLOB >> 30
            ))),
            other => other,
        };
        let failed = chunk.is_err();
        let sent = chunks.send(chunk).await.is_ok();
        if failed || !sent {
            break;
        }
    }
    drop(chunks);
    match stored.await {
        Ok(Ok(_)) => StatusCode::CREATED.into_response(),
        Ok(Err(e)) => refuse(StatusCode::UNPROCESSABLE_ENTITY, e.to_string(), None),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
    }
}

/// The upload's chunks as a `Read` for the store (on a blocking thread).
struct ChunkReader {
    incoming: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.incoming.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
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

/// `GET /v1/blobs/{digest}`: a blob, streamed from the store (what a CLI relaying a promotion
/// to another server fetches).
pub async fn get_blob(State(app): State<Shared>, Path(digest): Path<String>) -> Response {
    let store = match store(&app) {
        Ok(s) => s,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e, None),
    };
    let Some((file, len)) = store.open_blob(&digest) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("blob {digest} is not on this server"),
            None,
        );
    };
    let chunks = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    Response::builder()
        .header("content-type", "application/octet-stream")
        .header("content-length", len)
        .body(Body::from_stream(chunks))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `GET /v1/artifacts/{app}/{version}`: a bundle's manifest.
pub async fn get_artifact(
    State(app): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    let store = match store(&app) {
        Ok(s) => s,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e, None),
    };
    match store.get(&name, &version) {
        Ok(Some(artifact)) => Json(artifact).into_response(),
        Ok(None) => refuse(
            StatusCode::NOT_FOUND,
            format!("artifact {name}:{version} is not on this server"),
            None,
        ),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
    }
}

/// `GET /v1/passed/{env}/{version}`: whether the version passed the environment's monitor
/// window here (what an environment on another server that `requires` this one asks).
pub async fn passed(
    State(app): State<Shared>,
    Path((env, version)): Path<(String, String)>,
) -> Response {
    match app.engine.with_ledger(|l| l.passed_in(&env, &version)) {
        Ok(passed) => Json(PassedView {
            environment: env,
            version,
            passed,
        })
        .into_response(),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
    }
}
