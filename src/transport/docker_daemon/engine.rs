//! A client for the few calls of the Docker engine API this program makes,
//! over the engine's unix socket: ping, image inspect and list, export
//! (`GET /images/get`, the `docker save` stream) and load
//! (`POST /images/load`). No `docker` CLI is involved.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;
use serde_json::Value;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::progress;

/// Where the engine listens when DOCKER_HOST does not say.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// The engine answers small requests at once; exports and loads of large
/// images take as long as they take.
const QUICK: Duration = Duration::from_secs(30);
/// At most this many local images are inspected to learn which layers the
/// engine holds.
const MAX_IMAGES_INSPECTED: usize = 500;

pub(crate) struct Engine {
    client: Client,
    socket: PathBuf,
}

/// The socket DOCKER_HOST names, or the default one.
fn socket_path(docker_host: Option<&str>) -> Result<PathBuf> {
    match docker_host.filter(|h| !h.is_empty()) {
        None => Ok(PathBuf::from(DEFAULT_SOCKET)),
        Some(host) => match host.strip_prefix("unix://") {
            Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
            _ => Err(Error::new(format!(
                "DOCKER_HOST={host} is not a unix socket; triton-compose talks to the local Docker engine over its unix socket only"
            ))
            .hint("set DOCKER_HOST=unix:///path/to/docker.sock, or unset it for /var/run/docker.sock")),
        },
    }
}

impl Engine {
    /// Connects to the engine DOCKER_HOST (or the default socket) names,
    /// and checks that it answers.
    pub(crate) fn connect() -> Result<Engine> {
        let socket = socket_path(std::env::var("DOCKER_HOST").ok().as_deref())?;
        crate::transport::tls_provider();
        let client = Client::builder()
            .unix_socket(socket.clone())
            .timeout(None)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::new("cannot set up an HTTP client").with_source(e))?;
        let engine = Engine { client, socket };
        engine.ping()?;
        Ok(engine)
    }

    /// `unix:///var/run/docker.sock`, for messages.
    pub(crate) fn address(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn url(&self, path: &str) -> String {
        format!("http://docker{path}")
    }

    fn ping(&self) -> Result<()> {
        let reply = self
            .client
            .get(self.url("/_ping"))
            .timeout(QUICK)
            .send()
            .map_err(|e| {
                Error::new(format!(
                    "cannot reach the local Docker engine at {}: {}",
                    self.address(),
                    root_cause(&e)
                ))
            })?;
        if !reply.status().is_success() {
            return Err(Error::new(format!(
                "the local Docker engine at {} answered its ping with {}",
                self.address(),
                reply.status()
            )));
        }
        Ok(())
    }

    /// The engine's `image inspect` of `name`, or `None` if it has no such
    /// image.
    pub(crate) fn inspect(&self, name: &str) -> Result<Option<Value>> {
        check_name(name)?;
        let reply = self.get(&format!("/images/{name}/json"))?;
        if reply.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(self.json(reply, &format!("inspecting {name}"))?))
    }

    /// Streams `docker save` of the named images, in one archive (layers
    /// they share appear once), into `out`. `estimate` (bytes) sizes the
    /// progress bar; the engine does not say how long the stream is.
    pub(crate) fn export(
        &self,
        names: &[&str],
        estimate: u64,
        out: &mut dyn std::io::Write,
    ) -> Result<u64> {
        let pairs: Vec<(&str, &str)> = names.iter().map(|n| ("names", *n)).collect();
        let url = reqwest::Url::parse_with_params(&self.url("/images/get"), &pairs)
            .map_err(|e| Error::new("cannot form the export request").with_source(e))?;
        let reply = self
            .client
            .get(url)
            .send()
            .map_err(|e| self.transport_error(e))?;
        let reply = self.checked(reply, &format!("exporting {}", names.join(", ")))?;
        let label = format!("docker save of {}", names.join(", "));
        let mut reply = progress::track(reply, estimate, label);
        let copied = std::io::copy(&mut reply, out).map_err(|e| {
            Error::from(e).context(format!(
                "reading the export of {} from the Docker engine",
                names.join(", ")
            ))
        })?;
        Ok(copied)
    }

    /// `docker load` of an archive file; returns the engine's messages
    /// ("Loaded image: NAME:TAG").
    pub(crate) fn load(&self, archive: &Path) -> Result<Vec<String>> {
        let file = std::fs::File::open(archive).ctx(|| format!("opening {}", archive.display()))?;
        let size = file.metadata()?.len();
        let reply = self
            .client
            .post(self.url("/images/load?quiet=1"))
            .header("Content-Type", "application/x-tar")
            .body(reqwest::blocking::Body::sized(
                progress::track(file, size, "loading into the Docker engine".into()),
                size,
            ))
            .send()
            .map_err(|e| self.transport_error(e))?;
        let mut reply = self.checked(reply, "loading the image")?;
        let mut text = String::new();
        reply
            .read_to_string(&mut text)
            .map_err(|e| Error::from(e).context("reading the engine's answer to the load"))?;
        // A stream of JSON messages; an error can come after a 200.
        let mut messages = Vec::new();
        for message in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
            let message = message.map_err(|e| {
                Error::new("the Docker engine's answer to the load is not JSON").with_source(e)
            })?;
            if let Some(error) = message.get("errorDetail").or_else(|| message.get("error")) {
                let text = error
                    .get("message")
                    .and_then(Value::as_str)
                    .or_else(|| error.as_str())
                    .unwrap_or("unknown error");
                return Err(Error::new(format!(
                    "the Docker engine refused the image: {text}"
                )));
            }
            if let Some(stream) = message.get("stream").and_then(Value::as_str) {
                messages.push(stream.trim().to_string());
            }
        }
        Ok(messages)
    }

    /// True when the engine keeps images in containerd's content store,
    /// whose load needs every blob in the archive.
    pub(crate) fn uses_containerd_store(&self) -> Result<bool> {
        let info = self.json(self.get("/info")?, "reading the engine's info")?;
        let status = info.get("DriverStatus").and_then(Value::as_array);
        Ok(status.is_some_and(|rows| {
            rows.iter().flat_map(|r| r.as_array()).flatten().any(|v| {
                v.as_str()
                    .is_some_and(|s| s.starts_with("io.containerd.snapshotter"))
            })
        }))
    }

    /// The chain IDs of every layer stack the engine's images hold: a load
    /// skips a layer whose chain the engine has.
    pub(crate) fn chain_ids(&self) -> Result<HashSet<Digest>> {
        let list = self.json(self.get("/images/json")?, "listing images")?;
        let mut chains = HashSet::new();
        let ids = list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i.get("Id").and_then(Value::as_str));
        for id in ids.take(MAX_IMAGES_INSPECTED) {
            let Some(image) = self.inspect(id)? else {
                continue; // removed meanwhile
            };
            chains.extend(chain_ids(&diff_ids(&image)));
        }
        Ok(chains)
    }

    fn get(&self, path: &str) -> Result<Response> {
        self.client
            .get(self.url(path))
            .timeout(QUICK)
            .send()
            .map_err(|e| self.transport_error(e))
    }

    fn json(&self, reply: Response, what: &str) -> Result<Value> {
        let bytes = self
            .checked(reply, what)?
            .bytes()
            .map_err(|e| self.transport_error(e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(format!("{what}: the Docker engine's answer is not JSON")).with_source(e)
        })
    }

    fn checked(&self, reply: Response, what: &str) -> Result<Response> {
        if reply.status().is_success() {
            return Ok(reply);
        }
        let status = reply.status();
        let message = reply
            .bytes()
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
            .unwrap_or_default();
        Err(Error::new(format!(
            "{what}: the Docker engine answered {status}{}{message}",
            if message.is_empty() { "" } else { ": " }
        )))
    }

    fn transport_error(&self, e: reqwest::Error) -> Error {
        Error::new(format!(
            "lost the connection to the Docker engine at {}: {}",
            self.address(),
            root_cause(&e)
        ))
    }
}

/// An image inspect's `RootFS.Layers`.
pub(crate) fn diff_ids(inspect: &Value) -> Vec<Digest> {
    inspect
        .pointer("/RootFS/Layers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str()?.parse().ok())
        .collect()
}

/// The chain ID of each prefix of a layer stack, as the engine names them:
/// the first is its diff-id, each next `sha256(previous + " " + diff-id)`.
pub(crate) fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut chains: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let chain = match chains.last() {
            None => diff_id.clone(),
            Some(previous) => Digest::of(format!("{previous} {diff_id}").as_bytes()),
        };
        chains.push(chain);
    }
    chains
}

/// Image names go into request paths: refuse what is not a reference.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::new(format!("{name:?} is not an image name"))
            .hint("write docker-daemon:NAME:TAG, e.g. docker-daemon:tritonserver:latest"))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_names_a_unix_socket_or_nothing() {
        assert_eq!(socket_path(None).unwrap(), PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(
            socket_path(Some("")).unwrap(),
            PathBuf::from(DEFAULT_SOCKET)
        );
        assert_eq!(
            socket_path(Some("unix:///run/user/1000/docker.sock")).unwrap(),
            PathBuf::from("/run/user/1000/docker.sock")
        );
        let err = socket_path(Some("tcp://10.0.0.1:2375")).unwrap_err();
        assert!(err.message().contains("not a unix socket"), "{err}");
    }

    #[test]
    fn chain_ids_follow_the_engine_definition() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let chains = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chains[0], a);
        assert_eq!(chains[1], Digest::of(format!("{a} {b}").as_bytes()));
        assert!(check_name("triton/min:1@sha256:ab").is_ok());
        assert!(check_name("a b").is_err());
        assert!(check_name("x/../../containers/json").is_err());
    }
}
