//! Renders a [`Plan`] as `Dockerfile.compose`: the multi-stage Dockerfile
//! compose.py would write for the same request, so that `docker build` of it
//! gives the same files as the daemonless build. Its build context is the
//! work directory, where [`context_files`] are written beside it: the list
//! of dependency paths and the generated files.
//!
//! Nothing from an image can start an instruction or leave its quoting:
//! values (ENV, LABEL, ARG) with a control character are refused with an
//! error naming the field (a Dockerfile cannot hold a newline in a value),
//! the others are quoted and escaped; comments have control characters
//! replaced and never end in a line continuation.

use crate::config::ConfigChange;
use crate::error::{Error, Result};
use crate::layer::ImagePath;
use crate::plan::{Content, Plan, Step};

/// The staging stage and directory that dependency files pass through.
const DEPS_STAGE: &str = "deps";
const DEPS_DIR: &str = "/triton-compose-deps";
const FILES_LIST: &str = "triton-compose-deps.files";
const DIRS_LIST: &str = "triton-compose-deps.dirs";
/// The stage that removes what `--slim` removes from min, and its files.
const SLIM_STAGE: &str = "slimmed";
const SLIM_LIST: &str = "triton-compose-slim.remove";
const SLIM_STATUS: &str = "triton-compose-slim.status";
/// Where the slimmed stage keeps a copy of rm while it removes.
const SLIM_RM: &str = "triton-compose-slim.rm";
/// Prefix of the other files of min the slimmed stage writes again.
const SLIM_REPLACE: &str = "triton-compose-slim.replace";
/// eStargz's prefetch, one JSON record per line in the format of
/// stargz-snapshotter's `ctr-remote optimize --record-out` (its `recorder`
/// package), which `nerdctl image convert --estargz-record-in` reads.
pub(crate) const PREFETCH_RECORD: &str = "triton-compose-prefetch.json";

/// Files `docker build` of Dockerfile.compose needs in its context.
pub(crate) fn context_files(plan: &Plan) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let list = |paths: &[ImagePath]| -> Vec<u8> {
        let mut text = Vec::new();
        for path in paths.iter().filter(|p| !p.as_bytes().contains(&b'\n')) {
            text.push(b'/');
            text.extend_from_slice(path.as_bytes());
            text.push(b'\n');
        }
        text
    };
    if let Some(slim) = &plan.slim {
        // NUL-separated: any byte but NUL may be in a path.
        let mut list = Vec::new();
        for path in &slim.paths {
            list.push(b'/');
            list.extend_from_slice(path.as_bytes());
            list.push(0);
        }
        out.push((SLIM_LIST.to_string(), list));
        if let Some(status) = &slim.status {
            out.push((SLIM_STATUS.to_string(), status.clone()));
        }
        for (index, text) in slim.replace.values().enumerate() {
            out.push((format!("{SLIM_REPLACE}-{index}"), text.clone()));
        }
    }
    if let Some(paths) = plan.prefetched() {
        out.push((PREFETCH_RECORD.to_string(), prefetch_record(&paths)));
    }
    for layer in &plan.layers {
        for step in &layer.steps {
            match step {
                Step::CopyListed { files, dirs } => {
                    out.push((FILES_LIST.to_string(), list(files)));
                    out.push((DIRS_LIST.to_string(), list(dirs)));
                }
                Step::CopyGenerated(path) => {
                    if let Some(entry) = layer.entries.iter().find(|e| &e.path == path) {
                        if let Content::Inline(bytes) = &entry.content {
                            out.push((generated_name(path), bytes.clone()));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// `{"path":"usr/bin/x"}` per line; paths that are not UTF-8 cannot be
/// named in it and are left out (the composed image has them first still).
fn prefetch_record(paths: &[&ImagePath]) -> Vec<u8> {
    let mut out = Vec::new();
    for path in paths {
        if let Ok(path) = std::str::from_utf8(path.as_bytes()) {
            out.extend_from_slice(serde_json::json!({ "path": path }).to_string().as_bytes());
            out.push(b'\n');
        }
    }
    out
}

fn generated_name(path: &ImagePath) -> String {
    format!(
        "triton-compose-{}",
        String::from_utf8_lossy(path.as_bytes()).replace('/', "-")
    )
}

/// The stage compose.py names the `gpu-min` image.
const GPU_MIN_STAGE: &str = "min_container";

/// Names a Docker engine can resolve for the images; they become
/// overridable `ARG` defaults.
pub(crate) struct FromNames<'a> {
    pub full: &'a str,
    pub min: &'a str,
    /// Used when the plan copies from gpu-min.
    pub gpu_min: &'a str,
}

pub(crate) fn dockerfile(plan: &Plan, from: &FromNames<'_>) -> Result<String> {
    let mut out = header(plan);
    out.push_str(&args(plan, from)?);
    out.push_str(&stages(plan));
    match &plan.slim {
        None => out.push_str("FROM ${MIN_IMAGE}\n\n"),
        Some(_) => out.push_str(&slimmed_base(plan)?),
    }
    out.push_str(&config_changes(plan)?);
    let distroless = plan.slim.as_ref().is_some_and(|s| s.distroless);
    for layer in &plan.layers {
        out.push_str(&layer_steps(layer, distroless));
    }
    // Last, so that every RUN above runs as root.
    for change in &plan.config_changes {
        if let ConfigChange::User(user) = change {
            no_control("USER", user)?;
            out.push_str(&format!("\n# The user the server runs as.\nUSER {user}\n"));
        }
    }
    Ok(out)
}

/// Where the file comes from, and for which platform.
fn header(plan: &Plan) -> String {
    let mut out = format!(
        "#\n# Dockerfile.compose, written by triton-compose {} from the same plan\n\
         # as its daemonless build. Build it from the directory it is in:\n\
         #   docker build -f Dockerfile.compose --build-arg FULL_IMAGE=... --build-arg MIN_IMAGE=... .\n\
         #\n# full: {}\n# min:  {}\n#\n",
        env!("CARGO_PKG_VERSION"),
        comment(&plan.full_name),
        comment(&plan.min_name)
    );
    if let Some(name) = &plan.gpu_min_name {
        out.push_str(&format!("# gpu-min: {}\n#\n", comment(name)));
    }
    if let Some(paths) = plan.prefetched() {
        out.push_str(&format!(
            "# --compression estargz: every layer eStargz, the {} files the server\n\
             # opens first ahead of each layer's .prefetch.landmark. docker build\n\
             # writes plain layers; convert its image with that prefetch:\n\
             #   nerdctl image convert --oci --estargz --estargz-record-in={PREFETCH_RECORD} IMAGE IMAGE:esgz\n#\n",
            paths.len()
        ));
    }
    let field = |k: &str| plan.config.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let mut platform = format!("{}/{}", field("os"), field("architecture"));
    if !field("variant").is_empty() {
        platform = format!("{platform}/{}", field("variant"));
    }
    out.push_str(&format!(
        "# Rendered for platform {p}: build it with docker build --platform {p}.\n#\n",
        p = comment(&platform)
    ));
    out
}

/// The build arguments: versions and the images' names.
fn args(plan: &Plan, from: &FromNames<'_>) -> Result<String> {
    let mut out = String::new();
    let full = &plan.full_name;
    for (name, value, what) in [
        (
            "TRITON_VERSION",
            plan.info.version.as_str(),
            format!("ENV TRITON_SERVER_VERSION of {full}"),
        ),
        (
            "TRITON_CONTAINER_VERSION",
            plan.info.container_version.as_str(),
            format!("ENV NVIDIA_TRITON_SERVER_VERSION of {full}"),
        ),
        ("FULL_IMAGE", from.full, "the full image's name".to_string()),
        ("MIN_IMAGE", from.min, "the min image's name".to_string()),
    ] {
        out.push_str(&format!("ARG {name}={}\n", arg_value(&what, value)?));
    }
    if plan.gpu_min_name.is_some() {
        out.push_str(&format!(
            "ARG GPU_MIN_IMAGE={}\n",
            arg_value("the gpu-min image's name", from.gpu_min)?
        ));
    }
    Ok(out)
}

/// The stages the final image copies from.
fn stages(plan: &Plan) -> String {
    let mut out = String::from("\nFROM ${FULL_IMAGE} AS full\n\n");
    out.push_str(&slim_stage(plan));
    if plan.gpu_min_name.is_some() {
        out.push_str(&format!("FROM ${{GPU_MIN_IMAGE}} AS {GPU_MIN_STAGE}\n\n"));
    }
    let listed = plan
        .layers
        .iter()
        .flat_map(|l| &l.steps)
        .any(|s| matches!(s, Step::CopyListed { .. }));
    if listed {
        // Single files keep their symlinks, modes and owners through cp -a;
        // the result is one layer, as in the daemonless build.
        out.push_str(&format!(
            "FROM ${{FULL_IMAGE}} AS {DEPS_STAGE}\n\
             COPY {FILES_LIST} {DIRS_LIST} /\n\
             RUN cd / && mkdir {DEPS_DIR} \\\n      \
             && xargs -a /{FILES_LIST} -r -d '\\n' cp -a --parents --no-dereference -t {DEPS_DIR} \\\n      \
             && xargs -a /{DIRS_LIST} -r -d '\\n' -I{{}} mkdir -p {DEPS_DIR}{{}}\n\n"
        ));
    }
    out
}

/// The stage that removes what `--slim` removes from min (and writes
/// dpkg's status without the removed packages).
fn slim_stage(plan: &Plan) -> String {
    let Some(slim) = &plan.slim else {
        return String::new();
    };
    let mut out = format!(
        "# --slim: what nothing in the composed image loads goes ({} files; see {SLIM_LIST})\n\
         FROM ${{MIN_IMAGE}} AS {SLIM_STAGE}\n",
        slim.paths.len()
    );
    // A distroless image has no shell to run them in: they run here first,
    // with the environment they would have had (its values are checked
    // where the final stage sets them).
    let runs: Vec<&String> = (plan.layers.iter().filter(|_| slim.distroless))
        .flat_map(|l| &l.steps)
        .filter_map(|s| match s {
            Step::Run(script) => Some(script),
            _ => None,
        })
        .collect();
    for change in plan.config_changes.iter().filter(|_| !runs.is_empty()) {
        if let ConfigChange::Env(key, value) = change {
            out.push_str(&env_line(key, value));
        }
    }
    for script in runs {
        out.push_str(&format!("RUN {script}\n"));
    }
    let status = slim.status.is_some();
    out.push_str(&format!(
        "COPY {SLIM_LIST}{} /\n",
        if status {
            format!(" {SLIM_STATUS}")
        } else {
            String::new()
        }
    ));
    // rm from a copy: the list may hold rm itself (--distroless), and that
    // copy goes last.
    out.push_str(&format!("RUN cp /bin/rm /{SLIM_RM} \\\n"));
    if status {
        out.push_str(&format!(
            "      && cat /{SLIM_STATUS} > /{} && /{SLIM_RM} /{SLIM_STATUS} \\\n",
            crate::deps::dpkg::STATUS
        ));
    }
    out.push_str(&format!(
        "      && xargs -0 -r -a /{SLIM_LIST} /{SLIM_RM} -f -- \\\n      && /{SLIM_RM} /{SLIM_LIST} /{SLIM_RM}\n"
    ));
    if !slim.replace.is_empty() {
        out.push_str("# The dpkg lists of packages that stay without some of their programs.\n");
    }
    for (index, path) in slim.replace.keys().enumerate() {
        out.push_str(&format!(
            "COPY {SLIM_REPLACE}-{index} {}\n",
            path.display_abs()
        ));
    }
    out.push('\n');
    out
}

/// The final image's base under `--slim`: the slimmed stage's files, and
/// min's config (ENV, LABEL, WORKDIR, USER, ENTRYPOINT, CMD).
fn slimmed_base(plan: &Plan) -> Result<String> {
    let mut out = format!("FROM scratch\nCOPY --from={SLIM_STAGE} / /\n");
    let Some(config) = plan.min_config.as_ref().and_then(|c| c.get("config")) else {
        return Ok(out + "\n");
    };
    let strings = |key: &str| -> Vec<String> {
        config[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    for pair in strings("Env") {
        let (key, value) = pair.split_once('=').unwrap_or((&pair, ""));
        no_control(&format!("ENV {key} (from min's config)"), value)?;
        out.push_str(&format!(
            "ENV {key}={}\n",
            quote(&crate::config::literal(value))
        ));
    }
    let mut labels: Vec<(&String, &serde_json::Value)> =
        config["Labels"].as_object().into_iter().flatten().collect();
    labels.sort_by(|a, b| a.0.cmp(b.0));
    for (key, value) in labels {
        let value = value.as_str().unwrap_or_default();
        no_control(&format!("LABEL {key} (from min's config)"), value)?;
        out.push_str(&format!(
            "LABEL {}={}\n",
            quote(key),
            quote(&crate::config::literal(value))
        ));
    }
    for (key, instruction) in [("WorkingDir", "WORKDIR"), ("User", "USER")] {
        if let Some(value) = config[key].as_str().filter(|v| !v.is_empty()) {
            no_control(instruction, value)?;
            out.push_str(&format!("{instruction} {value}\n"));
        }
    }
    for (key, instruction) in [("Entrypoint", "ENTRYPOINT"), ("Cmd", "CMD")] {
        let args = strings(key);
        if !args.is_empty() {
            let args = serde_json::to_string(&args).expect("strings serialize");
            out.push_str(&format!("{instruction} {args}\n"));
        }
    }
    Ok(out + "\n")
}

/// ENV, LABEL, WORKDIR and ENTRYPOINT as the plan changes them.
fn config_changes(plan: &Plan) -> Result<String> {
    let full = &plan.full_name;
    let mut out = String::new();
    for change in &plan.config_changes {
        out.push_str(&match change {
            ConfigChange::Env(key, value) => {
                no_control(&format!("ENV {key} (from {full}'s config)"), value)?;
                env_line(key, value)
            }
            ConfigChange::Label(key, value) => {
                no_control(&format!("LABEL {key} (from {full}'s config)"), value)?;
                format!("LABEL {key}={}\n", quote(&crate::config::literal(value)))
            }
            ConfigChange::Workdir(dir) => {
                no_control("WORKDIR", dir)?;
                format!("WORKDIR {dir}\n")
            }
            ConfigChange::Entrypoint(args) => format!(
                "ENTRYPOINT {}\n",
                serde_json::to_string(args).expect("strings serialize")
            ),
            // After the layers' steps (see [`dockerfile`]).
            ConfigChange::User(_) => String::new(),
        });
    }
    Ok(out)
}

/// `ENV KEY=VALUE` (VALUE checked by the caller).
fn env_line(key: &str, value: &str) -> String {
    format!("ENV {key}={}\n", quote(value))
}

/// One layer of the plan: a comment saying what it is and why, and its steps.
fn layer_steps(layer: &crate::plan::LayerPlan, distroless: bool) -> String {
    let mut out = format!("\n# {}\n", comment(&layer.purpose()));
    if layer.steps.is_empty() {
        out.push_str("#   (docker build writes this part in the layer above)\n");
    }
    for note in &layer.notes {
        out.push_str(&format!("#   {}\n", comment(note)));
    }
    for step in &layer.steps {
        out.push_str(&match step {
            Step::Copy(path) => format!("COPY --from=full {path} {path}\n"),
            Step::Run(_) if distroless => {
                "# (run in the slimmed stage above: this image has no shell)\n".to_string()
            }
            Step::Run(script) => format!("RUN {script}\n"),
            Step::CopyListed { files, dirs } => format!(
                "# {} files and links, {} directories: see {FILES_LIST}, {DIRS_LIST}\n\
                 COPY --from={DEPS_STAGE} {DEPS_DIR}/ /\n",
                files.len(),
                dirs.len()
            ),
            Step::CopyGenerated(path) => format!("COPY {} {path}\n", generated_name(path)),
            Step::CopyGpuMin { from, to } => {
                format!("COPY --from={GPU_MIN_STAGE} {from} {to}\n")
            }
            Step::CopyContext { name, to } => format!("COPY {name} {to}\n"),
        });
    }
    out
}

/// Refuses a value a Dockerfile line cannot hold.
fn no_control(field: &str, value: &str) -> Result<()> {
    match value.chars().find(|c| c.is_control()) {
        None => Ok(()),
        Some(c) => Err(Error::new(format!(
            "{field} holds a control character ({c:?}), which Dockerfile.compose cannot hold: {value:?}"
        ))
        .hint("the image is malformed or hostile; nothing was written")),
    }
}

/// An ARG default: as it is when it is plainly safe, else quoted.
fn arg_value(field: &str, value: &str) -> Result<String> {
    no_control(field, value)?;
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/@+-".contains(&b));
    Ok(if plain {
        value.to_string()
    } else {
        quote(&crate::config::literal(value))
    })
}

/// Text for a comment line: no control character (so no new line), and no
/// trailing backslash.
fn comment(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if out.ends_with('\\') {
        out.push(' ');
    }
    out
}

/// Double-quotes a value for ENV/LABEL, keeping `$` references live.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What Docker makes of a double-quoted word: backslash escapes the
    /// next character.
    fn unquote(word: &str) -> Option<String> {
        let inner = word.strip_prefix('"')?.strip_suffix('"')?;
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?),
                '"' => return None, // an unescaped quote ends the word early
                c => out.push(c),
            }
        }
        Some(out)
    }

    proptest! {
        #[test]
        fn any_value_is_refused_or_stays_one_literal_word(value in "\\PC{0,40}|[\\x00-\\x7f]{0,40}") {
            match arg_value("field", &value) {
                Err(err) => prop_assert!(value.chars().any(char::is_control), "{}", err.message()),
                Ok(word) => {
                    prop_assert!(!word.chars().any(char::is_control));
                    if word.starts_with('"') {
                        prop_assert_eq!(unquote(&word), Some(value.clone()));
                    } else {
                        prop_assert_eq!(&word, &value);
                    }
                }
            }
            let line = comment(&value);
            prop_assert!(!line.contains('\n') && !line.contains('\r') && !line.ends_with('\\'));
        }
    }

    #[test]
    fn comments_and_values_cannot_start_an_instruction() {
        assert_eq!(comment("a\nRUN evil"), "a?RUN evil");
        assert_eq!(comment("ends in \\"), "ends in \\ ");
        assert_eq!(arg_value("f", "2.51.0").unwrap(), "2.51.0");
        assert_eq!(
            arg_value("f", "nvcr.io/nvidia/tritonserver:24.10-py3").unwrap(),
            "nvcr.io/nvidia/tritonserver:24.10-py3"
        );
        assert_eq!(arg_value("f", "a b\"$x\\").unwrap(), "\"a b\\\"\\$x\\\\\"");
        let err = arg_value("ENV X of full", "24.10\nRUN touch /pwned").unwrap_err();
        assert!(
            err.message()
                .contains("ENV X of full holds a control character"),
            "{}",
            err.message()
        );
        assert!(no_control("f", "tab\there").is_err());
    }
}
