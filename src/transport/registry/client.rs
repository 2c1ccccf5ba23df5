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

/// How many times a request is tried in all, and the first backoff.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
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
pub enum Payload {
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

pub struct Request {
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
    pub fn new(
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

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Request {
        self.headers.push((name, value.into()));
        self
    }

    pub fn payload(mut self, payload: Payload) -> Request {
        self.payload = payload;
        self
    }
}

pub struct RegistryClient {
    http: Client,
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
    pub fn connect(
        registry: &str,
        api_host: &str,
        insecure: bool,
        authfile: Option<&std::path::Path>,
    ) -> Result<RegistryClient> {
        let http = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(30))
            .timeout(None)
            .user_agent(concat!("triton-compose/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::new("cannot create an HTTP client").with_source(e))?;
        let credential = auth::lookup(registry, authfile)?;
        let https = Url::parse(&format!("https://{api_host}/")).map_err(|e| {
            Error::new(format!("invalid registry host {api_host:?}")).with_source(e)
        })?;
        let mut client = RegistryClient {
            http,
            base: https,
            registry: registry.to_string(),
            credential,
            tokens: Mutex::new(HashMap::new()),
            basic: Mutex::new(false),
            retry: RetryPolicy::default(),
        };
        if insecure {
            let probe = client
                .http
                .get(client.base.join("v2/").expect("valid"))
                .timeout(Duration::from_secs(10))
                .send();
            if probe.is_err() {
                tracing::debug!(
                    "{registry}: HTTPS does not answer; using plain HTTP (insecure registry)"
                );
                client.base = Url::parse(&format!("http://{api_host}/")).expect("valid");
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
    pub fn send(&self, request: &Request) -> Result<Response> {
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
            StatusCode::NOT_FOUND => Error::new(format!("{what}: not found (HTTP 404)")),
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
            "bearer" => {
                let realm = challenge.params.get("realm").ok_or_else(|| {
                    SendError::Fatal(Error::new(format!(
                        "{}: a Bearer challenge without realm",
                        self.registry
                    )))
                })?;
                let mut url = Url::parse(realm).map_err(|e| {
                    SendError::Fatal(
                        Error::new(format!("{}: invalid token realm {realm:?}", self.registry))
                            .with_source(e),
                    )
                })?;
                let scope = Self::scope(request);
                {
                    let mut query = url.query_pairs_mut();
                    if let Some(service) = challenge.params.get("service") {
                        query.append_pair("service", service);
                    }
                    query.append_pair("scope", &scope);
                }
                let mut token_request = self.http.get(url).timeout(Duration::from_secs(60));
                match &self.credential {
                    Some(Credential::Basic { username, password }) => {
                        token_request = token_request.basic_auth(username, Some(password));
                    }
                    Some(Credential::IdentityToken(_)) | None => {}
                }
                let response = token_request.send().map_err(SendError::from)?;
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
            _ => Ok(false),
        }
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
                builder = builder.body(body);
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
    pub fn blob_reader(&self, repository: &str, digest: &str, size: u64) -> Result<BlobReader<'_>> {
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
    pub fn blob_range(
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
pub struct BlobReader<'a> {
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
