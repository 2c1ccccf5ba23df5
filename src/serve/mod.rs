//! `triton-compose serve`: a read-only OCI distribution endpoint where
//! every combination of components is a tag, composed when first pulled
//! (as nixery composes Nix images on pull).
//!
//! It is a new face on the compose pipeline, not a second one. At start
//! the min/full pair is opened and scanned once ([`crate::compose::Session`],
//! through the store). A manifest asked for by tag ([`tags`]) is composed
//! into an OCI layout kept under the state directory (one layout per
//! min/full pair and settings, named by their digest), tagged with the selection's
//! canonical tag. Its layers come from the store when any variant built
//! them before, so nodes that pulled one variant hold most of the next.
//! Manifests by digest and blobs (with `Range`) are served from that
//! layout, min's blobs included (copied there once, when first needed).
//!
//! Composes run one at a time behind one lock. A request for a selection
//! being composed waits for it and is then served from the layout: each
//! selection is composed once (single flight), and memory stays that of
//! one compose. HTTP runs on tokio (axum); composing and file reads run on
//! its blocking pool.

mod auth;
mod bound;
pub(crate) mod tags;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use self::bound::{blob_path, Bound, InFlight, Layout, MAX_MANIFEST};
use crate::compose::Session;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::image::media_type;
use crate::request::ComposeRequest;
use crate::triton::Component;

/// How `serve` runs.
pub struct ServeOptions {
    /// The images (and store, work directory) every selection composes from.
    pub base: ComposeRequest,
    pub listen: SocketAddr,
    /// Where composed layouts are kept.
    pub state_dir: PathBuf,
    /// Stop after this long without a request (for tests and batch jobs).
    pub exit_after_idle: Option<Duration>,
    /// Serve HTTPS with this certificate chain and key (PEM).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Ask for HTTP Basic credentials found in this htpasswd file (bcrypt).
    pub htpasswd: Option<PathBuf>,
    /// Check this often whether min's or full's reference moved.
    pub refresh: Option<Duration>,
    /// On SIGTERM or SIGINT, how long in-flight responses may take to
    /// finish before the server stops anyway.
    pub shutdown_grace: Duration,
    /// How many new selections may wait to be composed (or be composing)
    /// at once; past that, 429 with Retry-After.
    pub max_pending: usize,
    /// Least recently served tags are evicted past this many bytes of
    /// composed images ([`bound`]).
    pub state_max_size: u64,
}

#[derive(Default)]
struct Metrics {
    requests: Mutex<HashMap<(String, u16), u64>>,
    bytes: AtomicU64,
    composes: AtomicU64,
    hits: AtomicU64,
    /// New layers of composes taken from the store, and built.
    layers_reused: AtomicU64,
    layers_built: AtomicU64,
    /// Manifest requests refused because too many selections were pending.
    refused: AtomicU64,
    /// How long composes took.
    compose_seconds: Mutex<Histogram>,
}

/// A Prometheus histogram of seconds.
#[derive(Default)]
struct Histogram {
    /// Counts at or under each of [`Histogram::BOUNDS`].
    buckets: [u64; 6],
    sum: f64,
    count: u64,
}

impl Histogram {
    const BOUNDS: [f64; 6] = [1.0, 5.0, 15.0, 60.0, 300.0, 1800.0];

    fn observe(&mut self, seconds: f64) {
        for (bucket, bound) in self.buckets.iter_mut().zip(Self::BOUNDS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn render(&self, name: &str, help: &str) -> String {
        let mut out = format!("# HELP {name} {help}\n# TYPE {name} histogram\n");
        for (bound, count) in Self::BOUNDS.iter().zip(self.buckets) {
            out.push_str(&format!("{name}_bucket{{le=\"{bound}\"}} {count}\n"));
        }
        out.push_str(&format!(
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}\n",
            self.count, self.sum, self.count
        ));
        out
    }
}

/// What one min/full pair serves: its session and the layout its
/// selections are composed into.
struct Generation {
    session: Mutex<Session>,
    offered: Vec<Component>,
    ids: (Option<Digest>, Option<Digest>),
    /// The OCI layout the selections are composed into, with their tags.
    layout: Arc<Layout>,
}

impl Generation {
    /// Opens and scans the images `base` names.
    fn open(base: &ComposeRequest, state_dir: &Path) -> Result<Generation> {
        let session = Session::open(base)?;
        let ids = session.ids();
        // The pair and every setting that changes an image name the layout,
        // so that two settings never mix their tags.
        let pair = Digest::of(
            format!(
                "{}\n{}\ngpu={} compression={:?} sbom={} slim={:?}",
                ids.0.as_ref().map(|d| d.to_string()).unwrap_or_default(),
                ids.1.as_ref().map(|d| d.to_string()).unwrap_or_default(),
                base.enable_gpu,
                base.compression,
                base.sbom,
                base.slim,
            )
            .as_bytes(),
        );
        let layout = state_dir.join("layouts").join(&pair.hex()[..16]);
        std::fs::create_dir_all(layout.parent().expect("has a parent"))
            .ctx(|| format!("creating {}", state_dir.display()))?;
        let layout = Arc::new(Layout::open(&layout));
        let offered = session.offered();
        tracing::info!(
            "serving {} composed selection(s) from {}; components: {}",
            layout.len(),
            layout.dir.display(),
            offered
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(Generation {
            session: Mutex::new(session),
            offered,
            ids,
            layout,
        })
    }
}

struct State {
    /// The pair tags resolve against; `None` while it is being opened and
    /// scanned (the server answers `/healthz`, and 503 elsewhere).
    current: RwLock<Option<Arc<Generation>>>,
    /// The other layouts of the state directory (pairs replaced by
    /// `--refresh`, other settings): their digests stay served.
    previous: RwLock<Vec<Arc<Layout>>>,
    /// Keeps the layouts under `--state-max-size`.
    bound: Arc<Bound>,
    metrics: Metrics,
    last_request: Mutex<Instant>,
    users: auth::Users,
    /// New selections waiting to be composed or composing, with how many
    /// requests wait for each.
    pending: Mutex<HashMap<String, usize>>,
    max_pending: usize,
}

impl State {
    /// The pair served; only called once [`State::ready`] (routes check).
    fn current(&self) -> Arc<Generation> {
        self.current
            .read()
            .expect("not poisoned")
            .clone()
            .expect("requests are routed once the images are read")
    }

    /// True once min and full are opened and scanned.
    fn ready(&self) -> bool {
        self.current.read().expect("not poisoned").is_some()
    }

    /// Every layout, the current one first.
    fn layouts(&self) -> Vec<Arc<Layout>> {
        let mut layouts = vec![self.current().layout.clone()];
        layouts.extend(self.previous.read().expect("not poisoned").iter().cloned());
        layouts
    }

    /// A blob's file in the current layout or an earlier one; the tags
    /// that reach it count as just served.
    fn find_blob(&self, digest: &Digest) -> PathBuf {
        let tick = self.bound.tick();
        let layouts = self.layouts();
        for layout in &layouts {
            layout.touch(digest, tick);
        }
        layouts
            .iter()
            .map(|layout| blob_path(&layout.dir, digest))
            .find(|p| p.exists())
            .unwrap_or_else(|| blob_path(&layouts[0].dir, digest))
    }

    /// Opens the pair `base` names, with the other layouts of the state
    /// directory, and brings them under the bound.
    fn open(&self, base: &ComposeRequest, state_dir: &Path) -> Result<()> {
        let generation = Generation::open(base, state_dir)?;
        let others = bound::other_layouts(state_dir, &generation.layout.dir);
        let current = generation.layout.clone();
        *self.previous.write().expect("not poisoned") = others;
        *self.current.write().expect("not poisoned") = Some(Arc::new(generation));
        let _writing = current.writing();
        self.bound.enforce(&self.layouts(), &current, None);
        Ok(())
    }

    /// With `--refresh`: when min's or full's reference now names another
    /// image, opens the new pair; the old layout keeps being served.
    fn refresh(&self, base: &ComposeRequest, state_dir: &Path) -> Result<()> {
        let ids = |reference: &crate::transport::ImageRef| -> Result<Option<Digest>> {
            Ok(crate::transport::open_source(reference, &base.transport)?
                .image()
                .id
                .clone())
        };
        let now = (ids(&base.min)?, ids(&base.full)?);
        let current = self.current();
        if now == current.ids {
            return Ok(());
        }
        tracing::info!("min or full moved: opening the new pair");
        let mut next = Generation::open(base, state_dir)?;
        let mut previous = self.previous.write().expect("not poisoned");
        // One `Layout` per directory: the new pair may have been served before.
        if let Some(known) = previous.iter().position(|l| l.dir == next.layout.dir) {
            next.layout = previous.remove(known);
        }
        previous.insert(0, current.layout.clone());
        *self.current.write().expect("not poisoned") = Some(Arc::new(next));
        Ok(())
    }
}

/// Listens, opens the images, then serves until stopped (SIGTERM or
/// SIGINT: in-flight responses get `shutdown_grace` to finish; a compose in
/// progress is abandoned as interrupted runs are), or idle.
pub fn serve(options: ServeOptions) -> Result<()> {
    let users = match &options.htpasswd {
        Some(path) => auth::Users::load(path)?,
        None => auth::Users::default(),
    };
    let state = Arc::new(State {
        current: RwLock::new(None),
        pending: Mutex::new(HashMap::new()),
        max_pending: options.max_pending.max(1),
        previous: RwLock::new(Vec::new()),
        bound: Arc::new(Bound::new(options.state_max_size)),
        metrics: Metrics::default(),
        last_request: Mutex::new(Instant::now()),
        users,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::new("cannot start the server's runtime").with_source(e))?;
    runtime.block_on(run(state, &options))
}

async fn run(state: Arc<State>, options: &ServeOptions) -> Result<()> {
    let listen = options.listen;
    let listener = std::net::TcpListener::bind(listen).map_err(|e| {
        Error::new(format!("cannot listen on {listen}"))
            .with_source(e)
            .hint("choose a free address with --listen, e.g. 127.0.0.1:5000")
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::new("cannot set up the listening socket").with_source(e))?;
    let app = axum::Router::new().fallback({
        let state = state.clone();
        move |request: Request<Body>| handle(state.clone(), request)
    });
    let handle = axum_server::Handle::new();
    let failed = open_in_background(&state, options, &handle);
    stop_when_signalled(&handle, options.shutdown_grace);
    if let Some(limit) = options.exit_after_idle {
        stop_when_idle(&state, &handle, limit);
    }
    if let Some(every) = options.refresh {
        refresh_every(&state, options, every);
    }
    let service = app.into_make_service();
    let served = match &options.tls {
        Some((cert, key)) => {
            crate::transport::tls_provider();
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(|e| {
                    Error::new(format!(
                        "cannot use {} and {} for TLS",
                        cert.display(),
                        key.display()
                    ))
                    .with_source(e)
                    .hint("give a PEM certificate chain and its PEM private key")
                })?;
            tracing::info!("listening on https://{listen}");
            axum_server::from_tcp_rustls(listener, config)
                .map_err(|e| Error::new("cannot serve TLS").with_source(e))?
                .handle(handle)
                .serve(service)
                .await
        }
        None => {
            tracing::info!("listening on http://{listen}");
            axum_server::from_tcp(listener)
                .map_err(|e| Error::new("cannot serve").with_source(e))?
                .handle(handle)
                .serve(service)
                .await
        }
    };
    served.map_err(|e| Error::new("the server stopped").with_source(e))?;
    let failure = failed.lock().expect("not poisoned").take();
    match failure {
        // Stopped while reading the images: a stop like any other.
        Some(_) if crate::scratch::interrupted() => Ok(()),
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Stops the server after `limit` without a request.
fn stop_when_idle(state: &Arc<State>, handle: &axum_server::Handle<SocketAddr>, limit: Duration) {
    let (state, handle) = (state.clone(), handle.clone());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let last = *state.last_request.lock().expect("not poisoned");
            if last.elapsed() >= limit {
                tracing::info!("idle for {} s: stopping", limit.as_secs());
                handle.graceful_shutdown(Some(Duration::from_secs(5)));
                break;
            }
        }
    });
}

/// Checks every `every` whether min or full moved ([`State::refresh`]).
fn refresh_every(state: &Arc<State>, options: &ServeOptions, every: Duration) {
    let state = state.clone();
    let (base, state_dir) = (options.base.clone(), options.state_dir.clone());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let (state, base, dir) = (state.clone(), base.clone(), state_dir.clone());
            let checked = tokio::task::spawn_blocking(move || state.refresh(&base, &dir)).await;
            if let Ok(Err(err)) = checked {
                tracing::warn!("refresh: {err}; still serving the images read before");
            }
        }
    });
}

/// Opens and scans min and full on the blocking pool while the server
/// already answers `/healthz`; the pair is served once ready. A failure
/// stops the server and is returned by [`serve`].
fn open_in_background(
    state: &Arc<State>,
    options: &ServeOptions,
    handle: &axum_server::Handle<SocketAddr>,
) -> Arc<Mutex<Option<Error>>> {
    let failed = Arc::new(Mutex::new(None));
    let (state, failed_slot, handle) = (state.clone(), failed.clone(), handle.clone());
    let (base, state_dir) = (options.base.clone(), options.state_dir.clone());
    tokio::task::spawn_blocking(move || match state.open(&base, &state_dir) {
        Ok(()) => tracing::info!("ready"),
        Err(err) => {
            *failed_slot.lock().expect("not poisoned") = Some(err);
            handle.shutdown();
        }
    });
    failed
}

/// On SIGTERM or SIGINT: stop accepting, give in-flight responses `grace`
/// to finish, then stop. (A second signal ends the process at once.)
fn stop_when_signalled(handle: &axum_server::Handle<SocketAddr>, grace: Duration) {
    let handle = handle.clone();
    tokio::spawn(async move {
        while !crate::scratch::interrupted() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::info!(
            "stopping: finishing in-flight responses (at most {} s)",
            grace.as_secs()
        );
        handle.graceful_shutdown(Some(grace));
    });
}

/// One request: routed, answered, logged and counted.
async fn handle(state: Arc<State>, request: Request<Body>) -> Response<Body> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    // Probes need no credentials and tell nothing but the state.
    if let Some(response) = probe(&state, &path) {
        tracing::debug!("{method} {path} {}", response.status().as_u16());
        return response;
    }
    let response = match state.users.check(request.headers()) {
        Ok(()) => route(&state, &method, &path, request.headers()).await,
        Err(message) => {
            let mut response = error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message);
            set(
                &mut response,
                header::WWW_AUTHENTICATE,
                "Basic realm=\"triton-compose\"",
            );
            response
        }
    };
    let status = response.status().as_u16();
    let bytes = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|_| method != Method::HEAD)
        .unwrap_or(0);
    tracing::info!(
        "{method} {path} {status} {bytes} B {} ms",
        started.elapsed().as_millis()
    );
    *state.last_request.lock().expect("not poisoned") = Instant::now();
    *state
        .metrics
        .requests
        .lock()
        .expect("not poisoned")
        .entry((method.to_string(), status))
        .or_default() += 1;
    state.metrics.bytes.fetch_add(bytes, Ordering::Relaxed);
    response
}

/// `/healthz`: alive. `/readyz`: min and full are read and tags are served.
fn probe(state: &State, path: &str) -> Option<Response<Body>> {
    let (status, body) = match path {
        "/healthz" => (StatusCode::OK, "alive\n"),
        "/readyz" if state.ready() => (StatusCode::OK, "ready\n"),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: reading min and full\n",
        ),
        _ => return None,
    };
    let mut response = text(body.to_string());
    *response.status_mut() = status;
    Some(response)
}

async fn route(
    state: &Arc<State>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "this registry is read-only",
        );
    }
    if path == "/metrics" {
        return text(metrics(state));
    }
    if !state.ready() {
        let mut response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "starting: min and full are being read; try again shortly",
        );
        set(&mut response, header::RETRY_AFTER, "5");
        return response;
    }
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
    let head = method == Method::HEAD;
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
    let path = state.find_blob(&digest);
    let bytes = match tokio::fs::metadata(&path).await {
        Ok(meta) if meta.is_file() && meta.len() <= MAX_MANIFEST => {
            tokio::fs::read(&path).await.ok()
        }
        _ => None,
    };
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
async fn resolve_tag(state: &Arc<State>, reference: &str) -> Result<Digest, Response<Body>> {
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
    let Some(_waiting) = Pending::admit(state, &tag) else {
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
    fn admit(state: &Arc<State>, tag: &str) -> Option<Pending> {
        let mut pending = state.pending.lock().expect("not poisoned");
        if !pending.contains_key(tag) && pending.len() >= state.max_pending {
            return None;
        }
        *pending.entry(tag.to_string()).or_default() += 1;
        Some(Pending {
            state: state.clone(),
            tag: tag.to_string(),
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        bound::release(&self.state.pending, &self.tag);
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

fn bytes_response(
    bytes: Vec<u8>,
    content_type: &str,
    digest: Option<&Digest>,
    head: bool,
) -> Response<Body> {
    let len = bytes.len();
    let digest = digest.cloned().unwrap_or_else(|| Digest::of(&bytes));
    let mut response = Response::new(if head {
        Body::empty()
    } else {
        Body::from(bytes)
    });
    set(&mut response, header::CONTENT_TYPE, content_type);
    set(&mut response, header::CONTENT_LENGTH, &len.to_string());
    set(&mut response, "docker-content-digest", digest.as_str());
    response
}

fn text(body: String) -> Response<Body> {
    let len = body.len();
    let mut response = Response::new(Body::from(body));
    set(
        &mut response,
        header::CONTENT_TYPE,
        "text/plain; version=0.0.4",
    );
    set(&mut response, header::CONTENT_LENGTH, &len.to_string());
    response
}

/// An error in the distribution spec's JSON form.
fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::to_vec(
        &json!({"errors": [{"code": code, "message": message, "detail": null}]}),
    )
    .expect("serializes");
    let len = body.len();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    set(&mut response, header::CONTENT_TYPE, "application/json");
    set(&mut response, header::CONTENT_LENGTH, &len.to_string());
    response
}

fn set<K: header::IntoHeaderName>(response: &mut Response<Body>, key: K, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(key, value);
    }
}

/// The counters in Prometheus' text format.
fn metrics(state: &State) -> String {
    let m = &state.metrics;
    let mut out = String::from(
        "# HELP triton_compose_requests_total HTTP requests answered.\n# TYPE triton_compose_requests_total counter\n",
    );
    let mut requests: Vec<((String, u16), u64)> = m
        .requests
        .lock()
        .expect("not poisoned")
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    requests.sort();
    for ((method, status), count) in requests {
        out.push_str(&format!(
            "triton_compose_requests_total{{method=\"{method}\",status=\"{status}\"}} {count}\n"
        ));
    }
    for (name, kind, help, value) in series(state) {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    out.push_str(
        &m.compose_seconds
            .lock()
            .expect("not poisoned")
            .render("triton_compose_compose_seconds", "How long composes took."),
    );
    out
}

/// The single-valued counters and gauges: name, type, help, value.
fn series(state: &State) -> [(&'static str, &'static str, &'static str, u64); 10] {
    let m = &state.metrics;
    let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let pending = state.pending.lock().expect("not poisoned").len() as u64;
    [
        (
            "triton_compose_sent_bytes_total",
            "counter",
            "Body bytes sent.",
            count(&m.bytes),
        ),
        (
            "triton_compose_composes_total",
            "counter",
            "Selections composed.",
            count(&m.composes),
        ),
        (
            "triton_compose_store_hits_total",
            "counter",
            "Manifests served without composing (composed before).",
            count(&m.hits),
        ),
        (
            "triton_compose_store_layer_hits_total",
            "counter",
            "New layers of composes taken from the store.",
            count(&m.layers_reused),
        ),
        (
            "triton_compose_layers_built_total",
            "counter",
            "New layers of composes built.",
            count(&m.layers_built),
        ),
        (
            "triton_compose_refused_total",
            "counter",
            "Manifest requests refused with 429 (too many selections pending).",
            count(&m.refused),
        ),
        (
            "triton_compose_evictions_total",
            "counter",
            "Tags evicted to keep the state under --state-max-size.",
            state.bound.evictions(),
        ),
        (
            "triton_compose_pending_selections",
            "gauge",
            "New selections waiting to be composed or composing.",
            pending,
        ),
        (
            "triton_compose_state_bytes",
            "gauge",
            "Bytes of the composed images kept, as last measured.",
            state.bound.size(),
        ),
        (
            "triton_compose_state_max_bytes",
            "gauge",
            "The bound on them (--state-max-size).",
            state.bound.max(),
        ),
    ]
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
