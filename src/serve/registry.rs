//! The OCI distribution API, read-only: `/v2/`, manifests by tag (composed
//! on first pull, once) or digest, blobs with `Range`, and tag lists.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderMap, Response, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::bound::{blob_path, InFlight, MAX_MANIFEST};
use super::respond::{bytes_response, error, set};
use super::{tags, Generation, State};
use crate::digest::Digest;
use crate::error::Result;
use crate::image::media_type;
use crate::triton::Component;

/// A `/v2/` request, once the images are read.
pub(super) async fn route(
    state: &Arc<State>,
    path: &str,
    head: bool,
    headers: &HeaderMap,
) -> Response<Body> {
    if path == "/v2/" || path == "/v2" {
        let mut response = Response::new(Body::from("{}"));
        set(&mut response, header::CONTENT_TYPE, "application/json");
        set(&mut response, header::CONTENT_LENGTH, "2");
        set(
            &mut response,
            "docker-distribution-api-version",
            "registry/2.0",
        );
        return response;
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "not a /v2/ path");
    };
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        if !valid_name(name) {
            return error(
                StatusCode::NOT_FOUND,
                "NAME_INVALID",
                "invalid repository name",
            );
        }
        return manifest(state, reference, head).await;
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        if !valid_name(name) {
            return error(
                StatusCode::NOT_FOUND,
                "NAME_INVALID",
                "invalid repository name",
            );
        }
        return blob(state, digest, head, headers).await;
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        let mut tags: Vec<String> = state
            .current()
            .offered
            .iter()
            .map(|c| c.name.clone())
            .collect();
        tags.sort();
        tags.dedup();
        tags.insert(0, "latest".into());
        let body = serde_json::to_vec(&json!({"name": name, "tags": tags})).expect("serializes");
        return bytes_response(body, "application/json", None, head);
    }
    error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "no such endpoint")
}

/// Repository names as the distribution spec allows them (any is served).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        })
}

async fn manifest(state: &Arc<State>, reference: &str, head: bool) -> Response<Body> {
    let digest = if reference.contains(':') {
        let Ok(digest) = reference.parse::<Digest>() else {
            return invalid_digest(reference);
        };
        if let Err(response) = recompose_evicted(state, &digest).await {
            return response;
        }
        digest
    } else {
        match resolve_tag(state, reference).await {
            Ok(d) => d,
            Err(response) => return response,
        }
    };
    let bytes = read_small(state, &digest).await;
    let media_type = bytes.as_deref().and_then(|b| {
        serde_json::from_slice::<serde_json::Value>(b)
            .ok()?
            .get("mediaType")?
            .as_str()
            .filter(|m| *m == media_type::OCI_MANIFEST || *m == media_type::OCI_INDEX)
            .map(str::to_string)
    });
    match (bytes, media_type) {
        (Some(bytes), Some(media_type)) => bytes_response(bytes, &media_type, Some(&digest), head),
        _ => error(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            &format!("no manifest {digest}"),
        ),
    }
}

/// A manifest or config blob of the layouts (at most [`MAX_MANIFEST`]).
async fn read_small(state: &State, digest: &Digest) -> Option<Vec<u8>> {
    let path = state.find_blob(digest);
    match tokio::fs::metadata(&path).await {
        Ok(meta) if meta.is_file() && meta.len() <= MAX_MANIFEST => {
            tokio::fs::read(&path).await.ok()
        }
        _ => None,
    }
}

/// A manifest or config of the layouts, parsed.
pub(super) async fn read_json(state: &State, digest: &Digest) -> Option<serde_json::Value> {
    serde_json::from_slice(&read_small(state, digest).await?).ok()
}

/// A manifest digest of the current pair whose tag was evicted is
/// composed again (to the same digest: composition is deterministic).
async fn recompose_evicted(state: &Arc<State>, digest: &Digest) -> Result<(), Response<Body>> {
    let layout = state.current().layout.clone();
    if blob_path(&layout.dir, digest).exists() {
        return Ok(());
    }
    let Some(tag) = layout.selection_of(digest) else {
        return Ok(());
    };
    tracing::info!("{digest} was {tag}'s, evicted: composing it again");
    let again = resolve_tag(state, &tag).await?;
    if &again != digest {
        tracing::error!("{tag} composed again is {again}, not {digest}");
    }
    Ok(())
}

/// The manifest a tag names in the current pair, composed if need be.
pub(super) async fn resolve_tag(
    state: &Arc<State>,
    reference: &str,
) -> Result<Digest, Response<Body>> {
    let generation = state.current();
    let components =
        tags::parse(reference, &generation.offered).map_err(|tags::TagError(message)| {
            error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", &message)
        })?;
    let tag = tags::canonical(&components);
    if let Some(d) = generation.layout.get(&tag, state.bound.tick()) {
        state.metrics.hits.fetch_add(1, Ordering::Relaxed);
        return Ok(d);
    }
    let Some(_waiting) = Pending::admit(state, &tag, &components) else {
        state.metrics.refused.fetch_add(1, Ordering::Relaxed);
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "TOOMANYREQUESTS",
            &format!(
                "{} new selections are being composed; try {reference} again shortly",
                state.max_pending
            ),
        );
        set(&mut response, header::RETRY_AFTER, "10");
        return Err(response);
    };
    let state = state.clone();
    let composed =
        tokio::task::spawn_blocking(move || compose_once(&state, &generation, &components, &tag))
            .await;
    let failed = |message: String| {
        tracing::error!("{message}");
        error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", &message)
    };
    match composed {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(err)) => Err(failed(format!("composing {reference} failed: {err}"))),
        Err(_) => Err(failed(format!("composing {reference} panicked"))),
    }
}

/// A request waiting for a new selection: counted in [`State::pending`]
/// until dropped.
struct Pending {
    state: Arc<State>,
    tag: String,
}

impl Pending {
    /// Admits a request for `tag` unless `max_pending` other selections
    /// wait already (requests for a selection already waiting join it).
    fn admit(state: &Arc<State>, tag: &str, components: &[Component]) -> Option<Pending> {
        let mut pending = state.pending.lock().expect("not poisoned");
        if !pending.contains_key(tag) && pending.len() >= state.max_pending {
            return None;
        }
        *pending.entry(tag.to_string()).or_default() += 1;
        (state.wanted.lock().expect("not poisoned"))
            .entry(tag.to_string())
            .or_insert_with(|| components.to_vec());
        Some(Pending {
            state: state.clone(),
            tag: tag.to_string(),
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut pending = self.state.pending.lock().expect("not poisoned");
        let count = pending.entry(self.tag.clone()).or_insert(1);
        *count -= 1;
        if *count == 0 {
            pending.remove(&self.tag);
            (self.state.wanted.lock().expect("not poisoned")).remove(&self.tag);
        }
    }
}

/// Composes a selection unless it was meanwhile: the lock makes composes
/// one at a time, so concurrent requests for one selection compose it once.
fn compose_once(
    state: &State,
    generation: &Generation,
    components: &[Component],
    tag: &str,
) -> Result<Digest> {
    let session = generation.session.lock().expect("not poisoned");
    let layout = &generation.layout;
    if let Some(d) = layout.get(tag, state.bound.tick()) {
        state.metrics.hits.fetch_add(1, Ordering::Relaxed);
        return Ok(d);
    }
    let _writing = layout.writing();
    tracing::info!("composing {tag}");
    let started = Instant::now();
    let (committed, layers) = session.compose(components, &layout.dir, tag)?;
    state
        .metrics
        .compose_seconds
        .lock()
        .expect("not poisoned")
        .observe(started.elapsed().as_secs_f64());
    state.metrics.composes.fetch_add(1, Ordering::Relaxed);
    let reused = layers.iter().filter(|l| l.from_store).count() as u64;
    let m = &state.metrics;
    m.layers_reused.fetch_add(reused, Ordering::Relaxed);
    m.layers_built
        .fetch_add(layers.len() as u64 - reused, Ordering::Relaxed);
    tracing::info!("composed {tag}: {}", committed.description);
    state.measure_store(&session);
    let digest = committed.digest;
    layout.insert(tag, &digest, state.bound.tick());
    state.bound.enforce(&state.layouts(), layout, Some(tag));
    Ok(digest)
}

async fn blob(
    state: &Arc<State>,
    reference: &str,
    head: bool,
    headers: &HeaderMap,
) -> Response<Body> {
    let Ok(digest) = reference.parse::<Digest>() else {
        return invalid_digest(reference);
    };
    // Its tags stay until the body is sent (an open file would be read to
    // its end anyway, even once removed).
    let in_flight = state.bound.serving(&digest);
    let Some((mut file, size)) = open_blob(&state.find_blob(&digest)).await else {
        return error(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            &format!("no blob {digest}"),
        );
    };
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, size));
    let (status, start, len) = match range {
        None => (StatusCode::OK, 0, size),
        Some(Some((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Some(None) => {
            let mut response = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UNKNOWN",
                "the range lies outside the blob",
            );
            set(
                &mut response,
                header::CONTENT_RANGE,
                &format!("bytes */{size}"),
            );
            return response;
        }
    };
    let body = if head {
        Body::empty()
    } else {
        if file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "cannot read the blob",
            );
        }
        let reader = Guarded {
            inner: file.take(len),
            _in_flight: in_flight,
        };
        Body::from_stream(tokio_util::io::ReaderStream::new(reader))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    set(
        &mut response,
        header::CONTENT_TYPE,
        "application/octet-stream",
    );
    set(&mut response, header::CONTENT_LENGTH, &len.to_string());
    set(&mut response, header::ACCEPT_RANGES, "bytes");
    set(&mut response, "docker-content-digest", digest.as_str());
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            &mut response,
            header::CONTENT_RANGE,
            &format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    response
}

/// A blob's reader that keeps its download counted as in flight.
struct Guarded<R> {
    inner: R,
    _in_flight: InFlight,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Guarded<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// A manifest or blob path whose digest is malformed (the distribution
/// spec's `DIGEST_INVALID`).
fn invalid_digest(reference: &str) -> Response<Body> {
    error(
        StatusCode::BAD_REQUEST,
        "DIGEST_INVALID",
        &format!("{reference:?} is not a digest (sha256:<64 hex digits>)"),
    )
}

/// A blob's file and its size, if it is a regular file.
async fn open_blob(path: &Path) -> Option<(tokio::fs::File, u64)> {
    let file = tokio::fs::File::open(path).await.ok()?;
    match file.metadata().await {
        Ok(m) if m.is_file() => Some((file, m.len())),
        _ => None,
    }
}

/// `bytes=START-END`, `bytes=START-` or `bytes=-SUFFIX` within `size`:
/// the first and last byte; `None` when it cannot be satisfied.
fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            (size.saturating_sub(n), size - 1)
        }
        (s, "") => (s.parse().ok()?, size - 1),
        (s, e) => (s.parse().ok()?, e.parse::<u64>().ok()?.min(size - 1)),
    };
    (start <= end && start < size).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_http_reads_them() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=95-200", 100), Some((95, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

    #[test]
    fn repository_names_follow_the_spec() {
        assert!(valid_name("tritonserver"));
        assert!(valid_name("team/triton-server_1.x"));
        assert!(!valid_name("Upper"));
        assert!(!valid_name("a//b"));
        assert!(!valid_name(""));
    }
}
