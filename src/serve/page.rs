//! The browse page: `/` lists the images served, each component with its
//! kind, sizes and whether it is prebuilt, the tag grammar and pull lines;
//! `/tags/TAG` shows one tag's layers and sizes, what `--slim` saves, and
//! the `triton-compose` and `compose.py` command lines that make the same
//! image. Plain HTML (no JavaScript); everything taken from images or the
//! request is escaped. Behind `--htpasswd` like the registry.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Response, StatusCode};

use super::prebuild::{Part, Status};
use super::respond::{escape, html};
use super::{registry, tags, Generation, State};
use crate::layer::Compression;
use crate::progress::human_size;
use crate::request::ComposeRequest;
use crate::triton::Component;

/// The repository name the pull lines use (any name is served).
const REPOSITORY: &str = "tritonserver";

/// Paths longer than this are refused (414) before anything is parsed.
const MAX_PATH: usize = 1024;

/// `/` and `/tags/TAG`; anything else is 404.
pub(super) async fn route(
    state: &Arc<State>,
    path: &str,
    head: bool,
    headers: &HeaderMap,
) -> Response<Body> {
    if path.len() > MAX_PATH {
        return page_error(StatusCode::URI_TOO_LONG, "That path is too long.");
    }
    let host = host(state, headers);
    let body = if path == "/" {
        index(&state.current(), &host)
    } else if let Some(tag) = path.strip_prefix("/tags/") {
        match tag_page(state, tag, &host).await {
            Ok(body) => body,
            Err(response) => return response,
        }
    } else {
        return page_error(
            StatusCode::NOT_FOUND,
            "No such page: the pages are / and /tags/TAG.",
        );
    };
    html(body, head)
}

/// The host clients pull from, as this request named it when it is a
/// plain host[:port]; else the address served.
fn host(state: &State, headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .map(str::to_string)
        .unwrap_or_else(|| state.listen.to_string())
}

fn page_error(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = html(
        document(
            "triton-compose serve",
            &format!(
                "<p class=error>{}</p><p><a href=\"/\">All components</a></p>",
                escape(message)
            ),
        ),
        false,
    );
    *response.status_mut() = status;
    response
}

fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n",
        escape(title)
    )
}

const STYLE: &str = "body{font-family:sans-serif;max-width:60em;margin:1em auto;padding:0 1em}\
table{border-collapse:collapse}td,th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:left}\
td.n{text-align:right}pre{background:#f4f4f4;padding:.5em;overflow-x:auto}.error{color:#a00}";

/// A size for people, with the exact bytes beside it for machines.
fn size_cell(bytes: Option<u64>) -> String {
    match bytes {
        Some(b) => format!(
            "<td class=n data-bytes={b} title=\"{b} bytes\">{}</td>",
            human_size(b)
        ),
        None => "<td class=n>not built yet</td>".to_string(),
    }
}

fn kind_of(component: Option<&Component>) -> &'static str {
    component.map_or("core", |c| c.kind.name())
}

fn index(generation: &Generation, host: &str) -> String {
    let about = &generation.about;
    let mut body = format!(
        "<h1>Triton Inference Server {}, composed on pull</h1>\n\
         <p>Every combination of the components below is a tag of \
         <code>{host}/{REPOSITORY}</code>, composed from <b>min</b> <code>{}</code> and \
         <b>full</b> <code>{}</code> ({} of layers) when first pulled.</p>\n",
        escape(&about.triton_version),
        escape(&about.min),
        escape(&about.full),
        human_size(about.full_size),
        host = escape(host),
    );
    body.push_str(&components_table(&generation.prebuild.parts()));
    let prebuild = &generation.prebuild;
    let parts = prebuild.parts();
    let done = parts
        .iter()
        .filter(|p| matches!(p.status, Status::Prebuilt(_)))
        .count();
    let _ = writeln!(
        body,
        "<p id=prebuild>Prebuilt: {done} of {} parts{}.</p>",
        parts.len(),
        if prebuild.finished() {
            ""
        } else {
            " (building in the background)"
        }
    );
    let names: Vec<&str> = generation.offered.iter().map(|c| c.name.as_str()).collect();
    let example = tags::canonical(&generation.offered[..generation.offered.len().min(2)]);
    let _ = write!(
        body,
        "<h2>Tags</h2>\n<p>A tag is component names joined by dots, in any order \
         (<code>{example}</code>); every spelling of a selection is the same image. \
         <code>latest</code> is every component. Names: {}.</p>\n<ul id=tags>\n",
        names
            .iter()
            .map(|n| format!("<code>{}</code>", escape(n)))
            .collect::<Vec<_>>()
            .join(", "),
        example = escape(&example),
    );
    let mut examples: Vec<String> = generation
        .offered
        .iter()
        .take(3)
        .map(|c| c.name.clone())
        .collect();
    if generation.offered.len() > 1 {
        examples.push(example.clone());
    }
    examples.push("latest".into());
    for tag in &examples {
        let _ = writeln!(body, "<li><a href=\"/tags/{0}\">{0}</a></li>", escape(tag));
    }
    body.push_str("</ul>\n<h2>Pull</h2>\n");
    body.push_str(&pull_lines(
        host,
        examples.first().map_or("latest", String::as_str),
        generation,
    ));
    document("triton-compose serve", &body)
}

fn components_table(parts: &[Part]) -> String {
    let mut out = String::from(
        "<h2>Components</h2>\n<table id=components>\n<tr><th>kind</th><th>name</th>\
         <th>uncompressed</th><th>compressed</th><th>its dependencies</th><th>prebuilt</th></tr>\n",
    );
    for part in parts {
        let kind = kind_of(part.component.as_ref());
        let name = part.component.as_ref().map_or("core", |c| c.name.as_str());
        let (content, compressed, deps, state) = match &part.status {
            Status::Prebuilt(built) => (
                Some(built.own.0),
                Some(built.own.1),
                Some(built.deps.1),
                "yes".to_string(),
            ),
            Status::Waiting => (
                Some(part.content).filter(|&c| c > 0),
                None,
                None,
                "not yet".into(),
            ),
            Status::Skipped(why) => (
                Some(part.content).filter(|&c| c > 0),
                None,
                None,
                format!("no: {why}"),
            ),
            Status::Failed(why) => (
                Some(part.content).filter(|&c| c > 0),
                None,
                None,
                format!("failed: {why}"),
            ),
        };
        let link = match &part.component {
            Some(_) => format!("<a href=\"/tags/{0}\">{0}</a>", escape(name)),
            None => "core".to_string(),
        };
        let _ = writeln!(
            out,
            "<tr data-kind={kind} data-name=\"{}\"><td>{kind}</td><td>{link}</td>{}{}{}<td>{}</td></tr>",
            escape(name),
            size_cell(content),
            size_cell(compressed),
            size_cell(deps),
            escape(&state),
        );
    }
    out.push_str("</table>\n");
    out
}

/// Copy-paste lines for docker, podman and a Kubernetes pod's image field.
fn pull_lines(host: &str, tag: &str, generation: &Generation) -> String {
    let reference = escape(&format!("{host}/{REPOSITORY}:{tag}"));
    let podman_tls = if generation.tls {
        ""
    } else {
        "--tls-verify=false "
    };
    format!(
        "<p>docker (an insecure registry unless served with TLS):</p>\n\
         <pre id=pull-docker>docker pull {reference}</pre>\n\
         <p>podman:</p>\n<pre id=pull-podman>podman pull {podman_tls}{reference}</pre>\n\
         <p>Kubernetes, in a container of a pod:</p>\n<pre id=pull-kubernetes>image: {reference}</pre>\n"
    )
}

async fn tag_page(state: &Arc<State>, tag: &str, host: &str) -> Result<String, Response<Body>> {
    let generation = state.current();
    let components = tags::parse(tag, &generation.offered)
        .map_err(|tags::TagError(message)| page_error(StatusCode::NOT_FOUND, &message))?;
    let canonical = if tag == "latest" {
        "latest".to_string()
    } else {
        tags::canonical(&components)
    };
    let digest = registry::resolve_tag(state, tag).await?;
    let Some((manifest, config)) = image_of(state, &digest).await else {
        return Err(page_error(
            StatusCode::NOT_FOUND,
            "The image of that tag is not kept any more; try again.",
        ));
    };
    let layers = layers_of(&manifest, &config, generation.about.min_layers.len());
    let total: u64 = layers.iter().map(|(_, size)| size).sum();
    let about = &generation.about;
    let mut body = format!(
        "<h1><code>{}</code></h1>\n<p><a href=\"/\">All components</a></p>\n\
         <p>Manifest <code>{digest}</code>: {} in {} layers, against full's {} \
         (saves {}).</p>\n",
        escape(&format!("{REPOSITORY}:{canonical}")),
        human_size(total),
        layers.len(),
        human_size(about.full_size),
        human_size(about.full_size.saturating_sub(total)),
    );
    body.push_str("<table id=layers>\n<tr><th>#</th><th>layer</th><th>compressed</th></tr>\n");
    for (i, (what, size)) in layers.iter().enumerate() {
        let _ = writeln!(
            body,
            "<tr><td>{}</td><td>{}</td>{}</tr>",
            i + 1,
            escape(what),
            size_cell(Some(*size))
        );
    }
    body.push_str("</table>\n");
    let base = &generation.base;
    if base.slim.is_some() {
        let before: u64 = about.min_layers.iter().sum();
        let after: u64 = layers
            .iter()
            .take(about.min_layers.len())
            .map(|(_, s)| s)
            .sum();
        let _ = writeln!(
            body,
            "<p id=slim>--slim: min's layers are {} here, {} as min has them (saves {}).</p>",
            human_size(after),
            human_size(before),
            human_size(before.saturating_sub(after)),
        );
    } else {
        body.push_str("<p id=slim>--slim is off: min's layers are served as min has them.</p>\n");
    }
    body.push_str("<h2>Pull</h2>\n");
    body.push_str(&pull_lines(host, &canonical, &generation));
    body.push_str("<h2>The same image by hand</h2>\n");
    let (ours, theirs) = command_lines(base, &components, &canonical);
    let _ = write!(
        body,
        "<p>With triton-compose:</p>\n<pre id=command-triton-compose>{}</pre>\n\
         <p>With compose.py (min and full in a Docker engine under these names):</p>\n\
         <pre id=command-compose-py>{}</pre>\n",
        escape(&ours),
        escape(&theirs)
    );
    Ok(document(&format!("{REPOSITORY}:{canonical}"), &body))
}

/// A manifest of the layouts and its config.
async fn image_of(
    state: &State,
    digest: &crate::digest::Digest,
) -> Option<(serde_json::Value, serde_json::Value)> {
    let manifest = registry::read_json(state, digest).await?;
    let config = manifest["config"]["digest"].as_str()?.parse().ok()?;
    let config = registry::read_json(state, &config).await?;
    Some((manifest, config))
}

/// Each layer of a manifest: what it is (its history comment, or what made
/// it in min, whose `min_layers` come first) and its compressed size.
fn layers_of(
    manifest: &serde_json::Value,
    config: &serde_json::Value,
    min_layers: usize,
) -> Vec<(String, u64)> {
    let history: Vec<&serde_json::Value> = config["history"]
        .as_array()
        .map(|h| h.iter().filter(|e| e["empty_layer"] != true).collect())
        .unwrap_or_default();
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let entry = history.get(i);
            let said = |key: &str| -> Option<String> {
                let text = entry?[key].as_str().filter(|t| !t.is_empty())?;
                Some(text.chars().take(100).collect())
            };
            let what = if i < min_layers {
                let made = said("created_by").or_else(|| said("comment"));
                format!("min layer {}: {}", i + 1, made.unwrap_or_default())
            } else {
                said("comment").unwrap_or_else(|| "new layer".to_string())
            };
            (what, layer["size"].as_u64().unwrap_or(0))
        })
        .collect()
}

/// The `triton-compose` and `compose.py` command lines of a selection.
fn command_lines(base: &ComposeRequest, components: &[Component], tag: &str) -> (String, String) {
    let selection: Vec<String> = components
        .iter()
        .map(|c| format!("{} {}", c.kind.flag(), c.name))
        .collect();
    let selection = selection.join(" ");
    let gpu = if base.enable_gpu { "true" } else { "false" };
    let compression = match base.compression {
        Compression::Gzip { level } => format!("--compression gzip --compression-level {level}"),
        Compression::Zstd { level } => format!("--compression zstd --compression-level {level}"),
        Compression::Estargz { level } => {
            format!("--compression estargz --compression-level {level}")
        }
    };
    let slim = if base.slim.is_some() { " --slim" } else { "" };
    let ours = format!(
        "triton-compose --image min,{} --image full,{} {selection} --enable-gpu={gpu}{slim} \
         {compression} --output oci:./{REPOSITORY}:{tag}",
        base.min, base.full
    );
    let theirs = format!(
        "python3 compose.py --image min,{} --image full,{} {selection}{} --output-name {REPOSITORY}:{tag}",
        crate::compose::buildable_name(&base.min, "triton-compose-min"),
        crate::compose::buildable_name(&base.full, "triton-compose-full"),
        if base.enable_gpu { " --enable-gpu" } else { "" },
    );
    (ours, theirs)
}
