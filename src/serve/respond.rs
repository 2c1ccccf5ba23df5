//! Responses as the registry sends them: bytes with their digest, text,
//! HTML, and errors in the distribution spec's JSON form.

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};
use serde_json::json;

use crate::digest::Digest;

pub(super) fn bytes_response(
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

pub(super) fn text(body: String) -> Response<Body> {
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
pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
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

pub(super) fn set<K: header::IntoHeaderName>(response: &mut Response<Body>, key: K, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(key, value);
    }
}

/// An HTML page.
pub(super) fn html(body: String, head: bool) -> Response<Body> {
    let len = body.len();
    let mut response = Response::new(if head {
        Body::empty()
    } else {
        Body::from(body)
    });
    set(
        &mut response,
        header::CONTENT_TYPE,
        "text/html; charset=utf-8",
    );
    set(&mut response, header::CONTENT_LENGTH, &len.to_string());
    set(
        &mut response,
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'",
    );
    set(&mut response, "x-content-type-options", "nosniff");
    response
}

/// `text` with HTML's special characters escaped, for text and quoted
/// attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
