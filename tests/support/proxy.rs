//! A fault-injecting HTTP proxy in front of a registry, on 127.0.0.1, and a
//! stand-in "storage host" on 127.0.0.2 for redirected blob reads. Rules
//! decide, per request, whether to forward it or to answer with a fault.
//! Every request is recorded, with whether it carried an Authorization header.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status (and Retry-After seconds, if given).
    Status(u16, Option<u64>),
    /// Close the connection without answering.
    Reset,
    /// Forward, but send only the first half of the response body.
    Truncate,
    /// Forward, but flip a byte in the middle of the response body.
    Corrupt,
    /// Redirect to the storage host on 127.0.0.2.
    Redirect,
    /// For a mount request: forward it without its mount parameters, so the
    /// registry opens an upload session (202) instead of mounting.
    DeclineMount,
    /// Forward, but send only half of the response body, then nothing for
    /// this many milliseconds, then close.
    Stall(u64),
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub method: &'static str,
    /// Applies to paths containing this.
    pub path_contains: String,
    /// How many matching requests get the fault (then they are forwarded).
    pub times: usize,
    pub fault: Fault,
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub host: &'static str,
    pub method: String,
    pub path: String,
    pub authorization: bool,
    /// The Authorization scheme (`Basic`, `Bearer`), if any.
    pub scheme: Option<String>,
}

/// The token the test token server issues.
pub const TOKEN: &str = "test-token-7f3a";
/// The OAuth2 refresh token (Docker's `identitytoken`) the token server
/// takes in a POST, for [`TOKEN`].
pub const REFRESH_TOKEN: &str = "refresh-4c1d";

pub struct Proxy {
    pub host: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Proxy {
    /// Proxies `upstream` (`127.0.0.1:PORT`); `storage_auth` is what the
    /// storage host adds when it fetches from the registry.
    pub fn start(upstream: &str, rules: Vec<Rule>, storage_auth: String) -> Proxy {
        Proxy::start_inner(
            upstream,
            rules,
            storage_auth,
            None,
            Arc::new(Mutex::new(Vec::new())),
        )
    }

    /// A registry front that demands Bearer tokens, with a token server
    /// that hands out [`TOKEN`] for Basic credentials equal to `upstream_auth`
    /// (which the front then uses upstream).
    pub fn start_with_token_server(upstream: &str, upstream_auth: String) -> Proxy {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tokens = TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", tokens.local_addr().unwrap());
        {
            let (seen, expected) = (seen.clone(), upstream_auth.clone());
            std::thread::spawn(move || {
                for conn in tokens.incoming().flatten() {
                    let Some((head, _body)) = read_request(&conn) else {
                        continue;
                    };
                    record(&seen, "token", &head);
                    let basic = head
                        .lines()
                        .any(|l| l.eq_ignore_ascii_case(&format!("authorization: {expected}")));
                    let form = String::from_utf8_lossy(&_body).into_owned();
                    let refresh = head.starts_with("POST ")
                        && form.split('&').any(|p| p == "grant_type=refresh_token")
                        && form
                            .split('&')
                            .any(|p| p == format!("refresh_token={REFRESH_TOKEN}"));
                    let reply = if basic || refresh {
                        let body = if refresh {
                            format!(r#"{{"access_token":"{TOKEN}","expires_in":300}}"#)
                        } else {
                            format!(r#"{{"token":"{TOKEN}","expires_in":300}}"#)
                        };
                        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                    } else {
                        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                    };
                    let _ = (&conn).write_all(reply.as_bytes());
                    let _ = conn.shutdown(Shutdown::Both);
                }
            });
        }
        Proxy::start_inner(upstream, Vec::new(), upstream_auth, Some(realm), seen)
    }

    fn start_inner(
        upstream: &str,
        rules: Vec<Rule>,
        storage_auth: String,
        bearer_realm: Option<String>,
        seen: Arc<Mutex<Vec<Seen>>>,
    ) -> Proxy {
        let front_auth = storage_auth.clone();
        let storage = TcpListener::bind("127.0.0.2:0").unwrap();
        let storage_host = storage.local_addr().unwrap().to_string();
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = front.local_addr().unwrap().to_string();
        let rules = Arc::new(Mutex::new(rules));
        {
            let (upstream, seen) = (upstream.to_string(), seen.clone());
            std::thread::spawn(move || {
                for conn in storage.incoming().flatten() {
                    let (upstream, seen, auth) =
                        (upstream.clone(), seen.clone(), storage_auth.clone());
                    std::thread::spawn(move || {
                        let Some((head, body)) = read_request(&conn) else {
                            return;
                        };
                        record(&seen, "storage", &head);
                        let head = with_header(&head, "Authorization", &auth);
                        let response = forward(&upstream, &head, &body);
                        let _ = (&conn).write_all(&response);
                        let _ = conn.shutdown(Shutdown::Both);
                    });
                }
            });
        }
        {
            let (upstream, seen) = (upstream.to_string(), seen.clone());
            std::thread::spawn(move || {
                for conn in front.incoming().flatten() {
                    let (upstream, seen, rules, storage_host) = (
                        upstream.clone(),
                        seen.clone(),
                        rules.clone(),
                        storage_host.clone(),
                    );
                    let (realm, front_auth) = (bearer_realm.clone(), front_auth.clone());
                    std::thread::spawn(move || {
                        let Some((mut head, body)) = read_request(&conn) else {
                            return;
                        };
                        let (method, path) = request_line(&head);
                        record(&seen, "registry", &head);
                        if let Some(realm) = realm {
                            let bearer = format!("authorization: bearer {TOKEN}");
                            if !head.lines().any(|l| l.eq_ignore_ascii_case(&bearer)) {
                                let repo = path.trim_start_matches("/v2/");
                                let repo = repo.split("/blobs/").next().unwrap_or("");
                                let repo = repo.split("/manifests/").next().unwrap_or("");
                                let challenge = format!(
                                    "Bearer realm=\"{realm}\",service=\"test-registry\",scope=\"repository:{repo}:pull\""
                                );
                                let reply = format!(
                                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {challenge}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                                );
                                let _ = (&conn).write_all(reply.as_bytes());
                                let _ = conn.shutdown(Shutdown::Both);
                                return;
                            }
                            head = with_header(&head, "Authorization", &front_auth);
                        }
                        let fault = {
                            let mut rules = rules.lock().unwrap();
                            rules
                                .iter_mut()
                                .find(|r| {
                                    r.times > 0
                                        && r.method == method
                                        && path.contains(&r.path_contains)
                                })
                                .map(|r| {
                                    r.times -= 1;
                                    r.fault.clone()
                                })
                        };
                        let reply = match fault {
                            None => forward(&upstream, &head, &body),
                            Some(Fault::Status(code, retry_after)) => {
                                let extra = retry_after.map(|s| format!("Retry-After: {s}\r\n")).unwrap_or_default();
                                format!("HTTP/1.1 {code} Fault\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n").into_bytes()
                            }
                            Some(Fault::Reset) => {
                                let _ = conn.shutdown(Shutdown::Both);
                                return;
                            }
                            Some(Fault::Redirect) => format!(
                                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{storage_host}{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            )
                            .into_bytes(),
                            Some(Fault::DeclineMount) => {
                                let plain = path.split('?').next().unwrap_or(&path).to_string();
                                let head = head.replacen(&path, &plain, 1);
                                forward(&upstream, &head, &body)
                            }
                            Some(Fault::Stall(millis)) => {
                                let full = forward(&upstream, &head, &body);
                                let start = body_start(&full);
                                let keep = start + (full.len() - start) / 2;
                                let _ = (&conn).write_all(&full[..keep]);
                                std::thread::sleep(Duration::from_millis(millis));
                                let _ = conn.shutdown(Shutdown::Both);
                                return;
                            }
                            Some(Fault::Truncate) => {
                                let full = forward(&upstream, &head, &body);
                                let start = body_start(&full);
                                let keep = start + (full.len() - start) / 2;
                                full[..keep].to_vec()
                            }
                            Some(Fault::Corrupt) => {
                                let mut full = forward(&upstream, &head, &body);
                                let start = body_start(&full);
                                let middle = start + (full.len() - start) / 2;
                                if middle < full.len() {
                                    full[middle] ^= 0xff;
                                }
                                full
                            }
                        };
                        let _ = (&conn).write_all(&reply);
                        let _ = conn.shutdown(Shutdown::Both);
                    });
                }
            });
        }
        Proxy { host, seen }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn record(seen: &Mutex<Vec<Seen>>, host: &'static str, head: &str) {
    let (method, path) = request_line(head);
    let scheme = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("authorization")
            .then(|| value.trim().split(' ').next().unwrap_or("").to_string())
    });
    seen.lock().unwrap().push(Seen {
        host,
        method,
        path,
        authorization: scheme.is_some(),
        scheme,
    });
}

fn request_line(head: &str) -> (String, String) {
    let mut parts = head.split_whitespace();
    (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    )
}

/// Reads a request head and its Content-Length body (None for non-HTTP,
/// such as a TLS hello).
fn read_request(mut conn: &TcpStream) -> Option<(String, Vec<u8>)> {
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 65536];
    let head_end = loop {
        let n = conn.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        if data[0] == 0x16 {
            // A TLS handshake: this proxy speaks plain HTTP only.
            return None;
        }
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if data.len() > 1 << 20 {
            return None;
        }
    };
    let head = String::from_utf8(data[..head_end].to_vec()).ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Some((head, body))
}

fn with_header(head: &str, name: &str, value: &str) -> String {
    let mut lines: Vec<&str> = head
        .trim_end()
        .lines()
        .filter(|l| {
            !l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .collect();
    let extra = format!("{name}: {value}");
    lines.push(&extra);
    format!("{}\r\n\r\n", lines.join("\r\n"))
}

/// Sends a request upstream with `Connection: close` and returns the raw response.
fn forward(upstream: &str, head: &str, body: &[u8]) -> Vec<u8> {
    let head = with_header(head, "Connection", "close");
    let Ok(mut stream) = TcpStream::connect(upstream) else {
        return b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n".to_vec();
    };
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    response
}

fn body_start(response: &[u8]) -> usize {
    response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |i| i + 4)
}
