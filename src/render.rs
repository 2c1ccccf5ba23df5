//! Renders a [`Plan`] as `Dockerfile.compose`: the multi-stage Dockerfile
//! compose.py would write for the same request, so that `docker build` of it
//! gives the same files as the daemonless build. It needs no build context.

use crate::config::ConfigChange;
use crate::plan::{Plan, Step};

/// `full_from` and `min_from` are names a Docker engine can resolve; they
/// become overridable `ARG` defaults.
pub fn dockerfile(plan: &Plan, full_from: &str, min_from: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "#\n# Dockerfile.compose, written by triton-compose {} from the same plan\n\
         # as its daemonless build. No build context is used:\n\
         #   docker build -f Dockerfile.compose --build-arg FULL_IMAGE=... --build-arg MIN_IMAGE=... .\n\
         #\n# full: {}\n# min:  {}\n#\n",
        env!("CARGO_PKG_VERSION"),
        plan.full_name,
        plan.min_name
    ));
    out.push_str(&format!(
        "ARG TRITON_VERSION={}\nARG TRITON_CONTAINER_VERSION={}\nARG FULL_IMAGE={full_from}\nARG MIN_IMAGE={min_from}\n\n",
        plan.info.version, plan.info.container_version
    ));
    out.push_str("FROM ${FULL_IMAGE} AS full\n\nFROM ${MIN_IMAGE}\n\n");
    for change in &plan.config_changes {
        out.push_str(&match change {
            ConfigChange::Env(key, value) => format!("ENV {key}={}\n", quote(value)),
            ConfigChange::Label(key, value) => {
                format!("LABEL {key}={}\n", quote(&crate::config::literal(value)))
            }
            ConfigChange::Workdir(dir) => format!("WORKDIR {dir}\n"),
            ConfigChange::Entrypoint(args) => format!(
                "ENTRYPOINT {}\n",
                serde_json::to_string(args).expect("strings serialize")
            ),
        });
    }
    for layer in &plan.layers {
        out.push_str(&format!("\n# {}\n", layer.purpose));
        for step in &layer.steps {
            out.push_str(&match step {
                Step::Copy(path) => format!("COPY --from=full {path} {path}\n"),
                Step::Run(script) => format!("RUN {script}\n"),
            });
        }
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
