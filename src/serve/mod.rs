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
mod metrics;
mod page;
mod prebuild;
mod registry;
mod respond;
pub(crate) mod tags;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, Response, StatusCode};

use self::bound::{blob_path, Bound, Layout};
use self::metrics::Metrics;
use self::prebuild::Prebuild;
use self::respond::{error, set, text};
use crate::compose::{About, Session};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
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
    /// Build every component's layers into the store once ready
    /// ([`prebuild`]).
    pub prebuild: bool,
}

/// selections are composed into.
struct Generation {
    session: Mutex<Session>,
    offered: Vec<Component>,
    ids: (Option<Digest>, Option<Digest>),
    /// The OCI layout the selections are composed into, with their tags.
    layout: Arc<Layout>,
    about: About,
    /// The request every selection is composed with.
    base: ComposeRequest,
    prebuild: Prebuild,
    /// Served over HTTPS (for the pull lines of the page).
    tls: bool,
}

impl Generation {
    /// Opens and scans the images `base` names.
    fn open(base: &ComposeRequest, options: &Opening) -> Result<Generation> {
        let state_dir = &options.state_dir;
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
            about: session.about(),
            base: base.clone(),
            prebuild: Prebuild::new(&session, &offered, options.prebuild),
            session: Mutex::new(session),
            offered,
            ids,
            layout,
            tls: options.tls,
        })
    }
}

/// What opening a pair takes besides the request.
#[derive(Clone)]
struct Opening {
    state_dir: PathBuf,
    prebuild: bool,
    tls: bool,
}

impl ServeOptions {
    fn opening(&self) -> Opening {
        Opening {
            state_dir: self.state_dir.clone(),
            prebuild: self.prebuild,
            tls: self.tls.is_some(),
        }
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
    /// The components of each selection in `pending` (the prebuild gives
    /// way to them).
    wanted: Mutex<HashMap<String, Vec<Component>>>,
    max_pending: usize,
    /// The address served, for pull lines when a request names none.
    listen: SocketAddr,
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

    /// Notes the store's size for `/metrics`.
    fn measure_store(&self, session: &Session) {
        if let Some((used, max)) = session.store_usage() {
            self.metrics.store_bytes.store(used, Ordering::Relaxed);
            self.metrics.store_max_bytes.store(max, Ordering::Relaxed);
        }
    }

    /// True while a pull waits for a compose.
    fn pulls_waiting(&self) -> bool {
        !self.wanted.lock().expect("not poisoned").is_empty()
    }

    /// True while a pull waits for a compose that lacks one of
    /// `components` (none lacks any of none: every selection has the core).
    fn pulls_lack_one_of(&self, components: &[Component]) -> bool {
        let wanted = self.wanted.lock().expect("not poisoned");
        wanted
            .values()
            .any(|selection| components.iter().any(|c| !selection.contains(c)))
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
    fn open(self: &Arc<Self>, base: &ComposeRequest, opening: &Opening) -> Result<()> {
        let generation = Arc::new(Generation::open(base, opening)?);
        self.measure_store(&generation.session.lock().expect("not poisoned"));
        let others = bound::other_layouts(&opening.state_dir, &generation.layout.dir);
        let current = generation.layout.clone();
        *self.previous.write().expect("not poisoned") = others;
        *self.current.write().expect("not poisoned") = Some(generation.clone());
        {
            let _writing = current.writing();
            self.bound.enforce(&self.layouts(), &current, None);
        }
        prebuild::start(self, &generation);
        Ok(())
    }

    /// With `--refresh`: when min's or full's reference now names another
    /// image, opens the new pair; the old layout keeps being served.
    fn refresh(self: &Arc<Self>, base: &ComposeRequest, opening: &Opening) -> Result<()> {
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
        let mut next = Generation::open(base, opening)?;
        let mut previous = self.previous.write().expect("not poisoned");
        // One `Layout` per directory: the new pair may have been served before.
        if let Some(known) = previous.iter().position(|l| l.dir == next.layout.dir) {
            next.layout = previous.remove(known);
        }
        previous.insert(0, current.layout.clone());
        let next = Arc::new(next);
        *self.current.write().expect("not poisoned") = Some(next.clone());
        current.prebuild.retire();
        prebuild::start(self, &next);
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
        wanted: Mutex::new(HashMap::new()),
        max_pending: options.max_pending.max(1),
        listen: options.listen,
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
    let served = runtime.block_on(run(state, &options));
    // A compose abandoned by the stop may still be winding down on the
    // blocking pool; what it holds in the work directory goes with us.
    runtime.shutdown_timeout(Duration::from_secs(2));
    crate::scratch::remove_own(&options.base.work_dir);
    served
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
    let (base, opening) = (options.base.clone(), options.opening());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let (state, base, opening) = (state.clone(), base.clone(), opening.clone());
            let checked = tokio::task::spawn_blocking(move || state.refresh(&base, &opening)).await;
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
    let (base, opening) = (options.base.clone(), options.opening());
    tokio::task::spawn_blocking(move || match state.open(&base, &opening) {
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
    let shown: String = path.chars().take(200).collect();
    tracing::info!(
        "{method} {shown} {status} {bytes} B {} ms",
        started.elapsed().as_millis()
    );
    *state.last_request.lock().expect("not poisoned") = Instant::now();
    *state
        .metrics
        .requests
        .lock()
        .expect("not poisoned")
        .entry((metrics::kind(&path), method.to_string(), status))
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
    let head = method == Method::HEAD;
    if path == "/metrics" {
        return text(metrics::render(state));
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
    if path == "/v2" || path.starts_with("/v2/") {
        return registry::route(state, path, head, headers).await;
    }
    page::route(state, path, head, headers).await
}
