//! A blocking registry client: the distribution API's requests with
//! authentication (anonymous, Basic, Bearer tokens per repository scope),
//! redirects followed by hand (credentials never leave the registry's host),
//! and retries with backoff on 408, 429 (honouring Retry-After), 5xx and
//! broken connections. Blob downloads resume with a Range request.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::blocking::{Body, Client, Response};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, LOCATION, RANGE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};

use super::auth::{self, Challenge, Credential};
use crate::error::{Error, Result};

/// How long a transfer may go without a byte before it counts as broken.
const STALL: Duration = Duration::from_secs(60);

/// How many times a request is tried in all, and the first backoff.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryPolicy {
    pub attempts: u32,
    pub base_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // TRITON_COMPOSE_RETRY_BASE_MS shortens the wait (the tests use it).
        let base_ms = std::env::var("TRITON_COMPOSE_RETRY_BASE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(base_ms),
        }
    }
}

/// What a request may be retried with: its body must be re-creatable.
#[derive(Clone)]
pub(crate) enum Payload {
    None,
    Bytes(Vec<u8>),
    File(PathBuf, u64),
    /// A file whose transfer is shown as progress, with this label.
    Tracked(PathBuf, u64, String),
}

impl Payload {
    fn body(&self) -> Result<Option<Body>> {
        Ok(match self {
            Payload::None => None,
            Payload::Bytes(bytes) => Some(Body::from(bytes.clone())),
            Payload::File(path, len) | Payload::Tracked(path, len, _) => {
                let file = std::fs::File::open(path).map_err(|e| {
                    Error::new(format!("cannot open {}", path.display())).with_source(e)
                })?;
                match self {
                    Payload::Tracked(_, _, label) => Some(Body::sized(
                        crate::progress::track(file, *len, label.clone()),
                        *len,
                    )),
                    _ => Some(Body::sized(file, *len)),
                }
            }
        })
    }
}

pub(crate) struct Request {
    pub method: Method,
    /// A path under the registry (`/v2/...`) or an absolute URL.
    pub target: String,
    pub headers: Vec<(&'static str, String)>,
    pub payload: Payload,
    /// Scope actions needed: "pull" or "pull,push".
    pub actions: &'static str,
    pub repository: String,
}

impl Request {
    pub(crate) fn new(
        method: Method,
        repository: &str,
        target: impl Into<String>,
        actions: &'static str,
    ) -> Request {
        Request {
            method,
            target: target.into(),
            headers: Vec::new(),
            payload: Payload::None,
            actions,
            repository: repository.to_string(),
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Request {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn payload(mut self, payload: Payload) -> Request {
        self.payload = payload;
        self
    }
}

pub(crate) struct RegistryClient {
    http: Client,
    /// How long a transfer may go without a byte.
    stall: Duration,
    /// `https://host[:port]` or `http://...`.
    base: Url,
    registry: String,
    credential: Option<Credential>,
    /// Bearer tokens by scope; `basic` once the registry asked for Basic.
    tokens: Mutex<HashMap<String, String>>,
    basic: Mutex<bool>,
    retry: RetryPolicy,
}

impl RegistryClient {
    /// Connects to a registry host. Plain HTTP is used only for `insecure`
    /// registries (named with --insecure-registry, or on this machine), and
    /// only when HTTPS does not answer.
    /// `local`: a registry on this machine, which may speak plain HTTP
    /// when it has no TLS at all; `named_insecure`: named with
    /// --insecure-registry, which may fall back whatever TLS said.
    pub(crate) fn connect(
        registry: &str,
        api_host: &str,
        local: bool,
        named_insecure: bool,
        authfile: Option<&std::path::Path>,
        cert_dir: Option<&std::path::Path>,
    ) -> Result<RegistryClient> {
        let insecure = local;
        let certificates = ca_certificates(api_host, cert_dir)?;
        // A transfer that sends no byte for this long is broken off (and
        // retried or resumed); nothing else bounds a transfer's length.
        let stall = std::env::var("TRITON_COMPOSE_STALL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(STALL, Duration::from_millis);
        // The blocking client's timeout bounds the wait for a response and
        // each read of its body: a stall detector, not a length limit.
        // Uploads get one of their own, from their size (`upload_timeout`).
        crate::transport::tls_provider();
        let http = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .tls_certs_merge(certificates)
            .connect_timeout(Duration::from_secs(30))
            .timeout(stall)
            .user_agent(concat!("triton-compose/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::new("cannot create an HTTP client").with_source(e))?;
        let credential = auth::lookup(registry, authfile)?;
        let https = Url::parse(&format!("https://{api_host}/")).map_err(|e| {
            Error::new(format!("invalid registry host {api_host:?}")).with_source(e)
        })?;
        let mut client = RegistryClient {
            http,
            stall,
            base: https,
            registry: registry.to_string(),
            credential,
            tokens: Mutex::new(HashMap::new()),
            basic: Mutex::new(false),
            retry: RetryPolicy::default(),
        };
        if insecure || named_insecure {
            let probe = client
                .http
                .get(client.base.join("v2/").expect("valid"))
                .timeout(Duration::from_secs(10))
                .send();
            match probe {
                Ok(_) => {}
                // A certificate that does not verify is never a reason to
                // drop TLS, unless the user named the registry insecure.
                Err(err) if is_certificate_error(&err) && !named_insecure => {
                    return Err(Error::new(format!(
                        "{registry}: its TLS certificate does not verify"
                    ))
                    .with_source(err)
                    .hint(format!(
                        "give its CA with --cert-dir DIR or in /etc/containers/certs.d/{api_host}/ca.crt; or, to use plain HTTP, --insecure-registry {api_host}"
                    )));
                }
                Err(err) => {
                    if named_insecure {
                        tracing::warn!(
                            "{registry}: HTTPS failed ({err}); using plain HTTP, as --insecure-registry allows"
                        );
                    } else {
                        tracing::debug!(
                            "{registry}: HTTPS does not answer on this machine; using plain HTTP"
                        );
                    }
                    client.base = Url::parse(&format!("http://{api_host}/")).expect("valid");
                }
            }
        }
        Ok(client)
    }

    fn url(&self, target: &str) -> Result<Url> {
        if target.starts_with("http://") || target.starts_with("https://") {
            Url::parse(target)
        } else {
            self.base.join(target.trim_start_matches('/'))
        }
        .map_err(|e| Error::new(format!("invalid URL {target:?}")).with_source(e))
    }

    fn same_host(&self, url: &Url) -> bool {
        url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default()
    }

    /// Sends a request, authenticating, following redirects and retrying.
    /// Returns any response with a status below 400, else an error.
    pub(crate) fn send(&self, request: &Request) -> Result<Response> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = self.send_once(request);
            let retry_after = match &outcome {
                Ok(response) => match response.status() {
                    StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => {
                        Some(retry_after(response))
                    }
                    s if s.is_server_error() => Some(retry_after(response)),
                    _ => None,
                },
                Err(err) if err.is_transient() => Some(None),
                Err(_) => None,
            };
            match retry_after {
                Some(wait) if attempt < self.retry.attempts => {
                    let delay = wait.unwrap_or_else(|| backoff(self.retry.base_delay, attempt));
                    let what = match &outcome {
                        Ok(r) => format!("HTTP {}", r.status().as_u16()),
                        Err(e) => e.to_string(),
                    };
                    tracing::warn!(
                        "{} {}: {what}; retrying in {:.1} s ({attempt}/{})",
                        request.method,
                        request.target,
                        delay.as_secs_f64(),
                        self.retry.attempts - 1
                    );
                    std::thread::sleep(delay);
                }
                _ => {
                    let response = outcome.map_err(|e| e.into_error(&self.registry))?;
                    return self.check(request, response);
                }
            }
        }
    }

    fn check(&self, request: &Request, response: Response) -> Result<Response> {
        let status = response.status();
        if status.as_u16() < 400 {
            return Ok(response);
        }
        let body: String = response
            .text()
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        let what = format!("{} {} on {}", request.method, request.target, self.registry);
        let err = match status {
            StatusCode::UNAUTHORIZED => {
                Error::new(format!("{what}: authentication failed (HTTP 401)")).hint(format!(
                    "log in with `docker login {}` or pass --authfile with credentials for it",
                    self.registry
                ))
            }
            StatusCode::FORBIDDEN => Error::new(format!("{what}: access denied (HTTP 403)")).hint(
                "the credentials found do not allow this; check the repository's permissions",
            ),
            StatusCode::NOT_FOUND => Error::new(format!("{what}: not found (HTTP 404)"))
                .with_kind(crate::error::Kind::NotFound),
            s => Error::new(format!("{what}: HTTP {} {body}", s.as_u16())),
        };
        Err(err)
    }

    /// One try: authentication (with one re-try after a 401 challenge) and redirects.
    fn send_once(&self, request: &Request) -> std::result::Result<Response, SendError> {
        let mut response = self.send_following_redirects(request)?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(auth::parse_challenge);
            if let Some(challenge) = challenge {
                if self.answer(&challenge, request)? {
                    response = self.send_following_redirects(request)?;
                }
            }
        }
        Ok(response)
    }

    fn scope(request: &Request) -> String {
        format!("repository:{}:{}", request.repository, request.actions)
    }

    /// Obtains what a challenge asks for; false if there is nothing to try.
    fn answer(
        &self,
        challenge: &Challenge,
        request: &Request,
    ) -> std::result::Result<bool, SendError> {
        match challenge.scheme.as_str() {
            "basic" => {
                if self
                    .credential
                    .as_ref()
                    .and_then(Credential::basic_header)
                    .is_none()
                {
                    return Ok(false);
                }
                *self.basic.lock().expect("not poisoned") = true;
                Ok(true)
            }
            "bearer" => self.bearer(challenge, request),
            _ => Ok(false),
        }
    }

    /// Fetches a token from a Bearer challenge's realm and keeps it for the
    /// request's scope.
    fn bearer(
        &self,
        challenge: &Challenge,
        request: &Request,
    ) -> std::result::Result<bool, SendError> {
        let realm = challenge.params.get("realm").ok_or_else(|| {
            SendError::Fatal(Error::new(format!(
                "{}: a Bearer challenge without realm",
                self.registry
            )))
        })?;
        let url = Url::parse(realm).map_err(|e| {
            SendError::Fatal(
                Error::new(format!("{}: invalid token realm {realm:?}", self.registry))
                    .with_source(e),
            )
        })?;
        let scope = Self::scope(request);
        if self.base.scheme() == "https" && url.scheme() != "https" {
            return Err(SendError::Fatal(
                Error::new(format!(
                    "{}: the registry sends its token requests to {realm}, which is plain HTTP; credentials are not sent there",
                    self.registry
                ))
                .hint("the registry is misconfigured or a proxy altered its answer; a token realm of an HTTPS registry must be HTTPS"),
            ));
        }
        let service = challenge.params.get("service").map(String::as_str);
        let response = self
            .token_request(url, service, &scope)
            .timeout(Duration::from_secs(60))
            .send()
            .map_err(SendError::from)?;
        if !response.status().is_success() {
            return Err(SendError::Fatal(
                Error::new(format!(
                    "{}: the token server refused a token for {scope} (HTTP {})",
                    self.registry,
                    response.status().as_u16()
                ))
                .hint(format!(
                    "check the credentials for {} (docker login, or --authfile)",
                    self.registry
                )),
            ));
        }
        let body: serde_json::Value = response.json_value().map_err(SendError::Fatal)?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| {
                SendError::Fatal(Error::new(format!(
                    "{}: the token server sent no token",
                    self.registry
                )))
            })?;
        self.tokens
            .lock()
            .expect("not poisoned")
            .insert(scope, token.to_string());
        Ok(true)
    }

    /// The token request for `scope`: Docker's `identitytoken` through the
    /// OAuth2 refresh-token flow, else a GET with the basic credentials.
    fn token_request(
        &self,
        mut url: Url,
        service: Option<&str>,
        scope: &str,
    ) -> reqwest::blocking::RequestBuilder {
        match &self.credential {
            Some(Credential::IdentityToken(refresh)) => {
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                    ("client_id", "triton-compose"),
                    ("scope", scope),
                ];
                if let Some(service) = service {
                    form.push(("service", service));
                }
                let body = form
                    .iter()
                    .map(|(k, v)| format!("{k}={}", form_encode(v)))
                    .collect::<Vec<_>>()
                    .join("&");
                self.http
                    .post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
            }
            credential => {
                {
                    let mut query = url.query_pairs_mut();
                    if let Some(service) = service {
                        query.append_pair("service", service);
                    }
                    query.append_pair("scope", scope);
                }
                let get = self.http.get(url);
                match credential {
                    Some(Credential::Basic { username, password }) => {
                        get.basic_auth(username, Some(password))
                    }
                    _ => get,
                }
            }
        }
    }

    /// How long an upload may take: the stall time, plus a second per MiB
    /// (an upload slower than 1 MiB/s counts as stalled).
    fn upload_timeout(&self, payload: &Payload) -> Duration {
        let len = match payload {
            Payload::None => 0,
            Payload::Bytes(bytes) => bytes.len() as u64,
            Payload::File(_, len) | Payload::Tracked(_, len, _) => *len,
        };
        self.stall + Duration::from_secs(len >> 20)
    }

    fn authorization(&self, request: &Request) -> Option<String> {
        if let Some(token) = self
            .tokens
            .lock()
            .expect("not poisoned")
            .get(&Self::scope(request))
        {
            return Some(format!("Bearer {token}"));
        }
        if *self.basic.lock().expect("not poisoned") {
            return self.credential.as_ref().and_then(Credential::basic_header);
        }
        None
    }

    fn send_following_redirects(
        &self,
        request: &Request,
    ) -> std::result::Result<Response, SendError> {
        let mut url = self.url(&request.target).map_err(SendError::Fatal)?;
        let mut method = request.method.clone();
        for _ in 0..6 {
            let mut headers = HeaderMap::new();
            for (name, value) in &request.headers {
                headers.insert(
                    *name,
                    HeaderValue::from_str(value)
                        .map_err(|_| SendError::Fatal(Error::new("invalid header value")))?,
                );
            }
            // Credentials go to the registry itself only, never to the
            // storage hosts it redirects blob reads to.
            if self.same_host(&url) {
                if let Some(value) = self.authorization(request) {
                    headers.insert(
                        AUTHORIZATION,
                        HeaderValue::from_str(&value)
                            .map_err(|_| SendError::Fatal(Error::new("invalid token")))?,
                    );
                }
            }
            let mut builder = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers);
            if let Some(body) = request.payload.body().map_err(SendError::Fatal)? {
                builder = builder
                    .body(body)
                    .timeout(self.upload_timeout(&request.payload));
            }
            let response = builder.send().map_err(SendError::from)?;
            if !response.status().is_redirection() || response.status() == StatusCode::NOT_MODIFIED
            {
                return Ok(response);
            }
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    SendError::Fatal(Error::new(format!(
                        "{}: a redirect without Location",
                        self.registry
                    )))
                })?;
            let next = url
                .join(location)
                .map_err(|e| SendError::Fatal(Error::new("invalid redirect").with_source(e)))?;
            if next.scheme() == "http" && url.scheme() == "https" {
                return Err(SendError::Fatal(
                    Error::new(format!(
                        "{}: refusing a redirect from HTTPS to plain HTTP ({})",
                        self.registry,
                        next.host_str().unwrap_or("?")
                    ))
                    .hint("the registry or a proxy in between is misconfigured"),
                ));
            }
            if response.status() == StatusCode::SEE_OTHER {
                method = Method::GET;
            }
            url = next;
        }
        Err(SendError::Fatal(Error::new(format!(
            "{}: too many redirects",
            self.registry
        ))))
    }

    /// Streams a blob, resuming with Range requests if the connection
    /// breaks (the caller verifies size and digest).
    pub(crate) fn blob_reader(
        &self,
        repository: &str,
        digest: &str,
        size: u64,
    ) -> Result<BlobReader<'_>> {
        let request = Request::new(
            Method::GET,
            repository,
            format!("/v2/{repository}/blobs/{digest}"),
            "pull",
        );
        let response = self.send(&request)?;
        Ok(BlobReader {
            client: self,
            request,
            response: Some(response),
            received: 0,
            size,
            resumes: 0,
        })
    }
}

impl RegistryClient {
    /// `len` bytes of a blob from byte `start`, with one Range request. A
    /// registry that ignores the range sends the whole blob: what comes
    /// before `start` is skipped. The caller verifies the bytes.
    pub(crate) fn blob_range(
        &self,
        repository: &str,
        digest: &str,
        start: u64,
        len: u64,
    ) -> Result<Box<dyn Read + Send + '_>> {
        let request = Request::new(
            Method::GET,
            repository,
            format!("/v2/{repository}/blobs/{digest}"),
            "pull",
        )
        .header(
            RANGE.as_str(),
            format!("bytes={start}-{}", start + len.max(1) - 1),
        );
        let mut response = self.send(&request)?;
        if response.status() != StatusCode::PARTIAL_CONTENT {
            io::copy(&mut (&mut response).take(start), &mut io::sink())
                .map_err(|e| Error::new(format!("reading {digest}")).with_source(e))?;
        }
        Ok(Box::new(response.take(len)))
    }
}

/// `application/x-www-form-urlencoded` for one value.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// CA certificates to trust for `api_host` besides the system's, as docker
/// and podman find them: `SSL_CERT_FILE`, every `*.crt` of `--cert-dir`, and
/// of `/etc/docker/certs.d/HOST[:PORT]` and `/etc/containers/certs.d/HOST[:PORT]`.
fn ca_certificates(
    api_host: &str,
    cert_dir: Option<&std::path::Path>,
) -> Result<Vec<reqwest::Certificate>> {
    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(file) = std::env::var_os("SSL_CERT_FILE").filter(|f| !f.is_empty()) {
        files.push(PathBuf::from(file));
    }
    let mut dirs: Vec<PathBuf> = cert_dir.map(PathBuf::from).into_iter().collect();
    for root in ["/etc/docker/certs.d", "/etc/containers/certs.d"] {
        dirs.push(std::path::Path::new(root).join(api_host));
    }
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "crt"))
            .collect();
        found.sort();
        files.extend(found);
    }
    let mut certificates = Vec::new();
    for file in files {
        let pem = std::fs::read(&file).map_err(|e| {
            Error::new(format!("cannot read CA certificates {}", file.display())).with_source(e)
        })?;
        let bundle = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            Error::new(format!("{} holds no PEM certificates", file.display())).with_source(e)
        })?;
        certificates.extend(bundle);
    }
    Ok(certificates)
}

/// True when a request failed because the server's certificate did not
/// verify (as opposed to no TLS server answering at all).
fn is_certificate_error(err: &reqwest::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(error) = current {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            );
        }
        // An io::Error's source() skips the error it wraps: look inside.
        current = match error.downcast_ref::<io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    false
}

fn retry_after(response: &Response) -> Option<Duration> {
    let seconds: u64 = response
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds.min(60)))
}

/// Exponential backoff (x3) with up to 25% jitter.
fn backoff(base: Duration, attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(attempt);
    let jitter = (hasher.finish() % 1000) as f64 / 4000.0;
    base.mul_f64(3f64.powi(attempt as i32 - 1) * (1.0 + jitter))
}

pub(super) enum SendError {
    /// Worth another try: connection refused/reset, timeouts.
    Transient(reqwest::Error),
    Fatal(Error),
}

impl SendError {
    fn is_transient(&self) -> bool {
        matches!(self, SendError::Transient(_))
    }

    fn into_error(self, registry: &str) -> Error {
        match self {
            SendError::Transient(e) => Error::new(format!("cannot reach {registry}"))
                .with_source(e)
                .hint("check the registry address and your network; with a plain-HTTP registry pass --insecure-registry HOST:PORT"),
            SendError::Fatal(e) => e,
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Transient(e) => write!(f, "{e}"),
            SendError::Fatal(e) => write!(f, "{e}"),
        }
    }
}

impl From<reqwest::Error> for SendError {
    fn from(err: reqwest::Error) -> Self {
        if err.is_connect() || err.is_timeout() || err.is_request() || err.is_body() {
            SendError::Transient(err)
        } else {
            SendError::Fatal(Error::new("HTTP request failed").with_source(err))
        }
    }
}

trait JsonValue {
    fn json_value(self) -> Result<serde_json::Value>;
}

impl JsonValue for Response {
    fn json_value(self) -> Result<serde_json::Value> {
        let mut bytes = Vec::new();
        self.take(crate::manifest::MAX_DOCUMENT_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::new("cannot read a response").with_source(e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::new("a registry response is not JSON").with_source(e))
    }
}

/// Reads a blob, re-requesting the rest with `Range: bytes=N-` when the
/// stream breaks before `size` bytes (at most three times).
pub(crate) struct BlobReader<'a> {
    client: &'a RegistryClient,
    request: Request,
    response: Option<Response>,
    received: u64,
    size: u64,
    resumes: u32,
}

impl BlobReader<'_> {
    fn resume(&mut self, cause: &str) -> io::Result<()> {
        self.resumes += 1;
        if self.resumes > 3 {
            return Err(io::Error::other(Error::new(format!(
                "blob {} broke off after {} of {} bytes ({cause}), and resuming failed three times",
                self.request.target, self.received, self.size
            ))));
        }
        tracing::warn!(
            "{}: broke off after {} of {} bytes ({cause}); resuming",
            self.request.target,
            self.received,
            self.size
        );
        std::thread::sleep(backoff(self.client.retry.base_delay, self.resumes));
        let mut request = Request::new(
            Method::GET,
            &self.request.repository,
            self.request.target.clone(),
            "pull",
        );
        request = request.header(RANGE.as_str(), format!("bytes={}-", self.received));
        let mut response = self.client.send(&request).map_err(io::Error::other)?;
        if response.status() != StatusCode::PARTIAL_CONTENT {
            // The registry ignored the range: skip what we already have.
            io::copy(&mut (&mut response).take(self.received), &mut io::sink())?;
        }
        self.response = Some(response);
        Ok(())
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(response) = self.response.as_mut() else {
                return Ok(0);
            };
            match response.read(buf) {
                Ok(0) if self.received < self.size => self.resume("connection closed early")?,
                Ok(n) => {
                    self.received += n as u64;
                    return Ok(n);
                }
                Err(err) if self.received < self.size => self.resume(&err.to_string())?,
                Err(err) => return Err(err),
            }
        }
    }
}
