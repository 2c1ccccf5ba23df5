//! Edits to an image config kept as raw JSON (`serde_json::Value`), so that
//! fields this program does not know survive untouched. Also the Dockerfile
//! style `$VAR` expansion that ENV instructions perform.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// A change to the container config, as a Dockerfile instruction would make
/// it. The executor applies these; the Dockerfile renderer prints them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ConfigChange {
    /// `ENV KEY=VALUE`; VALUE may refer to `$VAR` / `${VAR}`.
    Env(String, String),
    Label(String, String),
    Workdir(String),
    /// `ENTRYPOINT [...]`; like Docker, it clears an inherited CMD.
    Entrypoint(Vec<String>),
    /// `USER UID[:GID]` (`--user`, or full's own user).
    User(String),
}

fn container_config(config: &mut Value) -> &mut Map<String, Value> {
    if !config.get("config").is_some_and(Value::is_object) {
        config["config"] = Value::Object(Map::new());
    }
    config["config"].as_object_mut().expect("just ensured")
}

/// The config's `User`, when it sets one.
pub(crate) fn user(config: &Value) -> Option<String> {
    config
        .pointer("/config/User")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
}

/// The config's environment as (key, value) pairs, in order.
pub(crate) fn env(config: &Value) -> Vec<(String, String)> {
    config
        .pointer("/config/Env")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (kv.to_string(), String::new()),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// How many layers a config's `rootfs.diff_ids` lists.
pub(crate) fn diff_id_count(config: &Value) -> usize {
    config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

pub(crate) fn env_var(config: &Value, key: &str) -> Option<String> {
    env(config)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

pub(crate) fn label(config: &Value, key: &str) -> Option<String> {
    config
        .pointer("/config/Labels")
        .and_then(|labels| labels.get(key))
        .and_then(Value::as_str)
        .map(String::from)
}

pub(crate) fn entrypoint(config: &Value) -> Option<Vec<String>> {
    config
        .pointer("/config/Entrypoint")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
}

/// Expands `$VAR` and `${VAR}` from `env`, as Docker does for ENV values;
/// unset variables expand to nothing. `\$` and `\\` are literal.
pub(crate) fn expand(value: &str, env: &[(String, String)]) -> String {
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut out = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some('$' | '\\')) => {
                out.push(chars.next().expect("peeked"));
            }
            '$' if chars.peek() == Some(&'{') => {
                chars.next();
                let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                out.push_str(&lookup(&name));
            }
            '$' if chars
                .peek()
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == '_') =>
            {
                let mut name = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        name.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push_str(&lookup(&name));
            }
            other => out.push(other),
        }
    }
    out
}

/// Escapes a literal value for an ENV change, so that expansion (ours or
/// Docker's) leaves it as it is.
pub(crate) fn literal(value: &str) -> String {
    value.replace('\\', "\\\\").replace('$', "\\$")
}

/// The PATH a container gets when its image sets none; Docker uses it for
/// `${PATH}` in ENV too (BuildKit even writes it into the config).
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Applies one change to a full image config.
pub(crate) fn apply(config: &mut Value, change: &ConfigChange) {
    match change {
        ConfigChange::Env(key, raw) => {
            let mut vars = env(config);
            let mut scope = vars.clone();
            if !scope.iter().any(|(k, _)| k == "PATH") {
                scope.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
            }
            let value = expand(raw, &scope);
            match vars.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value,
                None => vars.push((key.clone(), value)),
            }
            container_config(config).insert(
                "Env".into(),
                vars.into_iter()
                    .map(|(k, v)| Value::String(format!("{k}={v}")))
                    .collect(),
            );
        }
        ConfigChange::Label(key, value) => {
            let cfg = container_config(config);
            if !cfg.get("Labels").is_some_and(Value::is_object) {
                cfg.insert("Labels".into(), Value::Object(Map::new()));
            }
            cfg["Labels"]
                .as_object_mut()
                .expect("just ensured")
                .insert(key.clone(), Value::String(value.clone()));
        }
        ConfigChange::Workdir(dir) => {
            container_config(config).insert("WorkingDir".into(), Value::String(dir.clone()));
        }
        ConfigChange::User(user) => {
            container_config(config).insert("User".into(), Value::String(user.clone()));
        }
        ConfigChange::Entrypoint(args) => {
            let cfg = container_config(config);
            cfg.insert(
                "Entrypoint".into(),
                args.iter().cloned().map(Value::String).collect(),
            );
            cfg.remove("Cmd");
        }
    }
}

/// Seconds since the epoch of an RFC 3339 timestamp such as a config's `created`.
pub(crate) fn parse_timestamp(text: &str) -> Result<u64> {
    let time =
        humantime::parse_rfc3339_weak(text.trim_end_matches('Z').split('+').next().unwrap_or(text))
            .map_err(|e| Error::new(format!("unreadable timestamp {text:?}")).with_source(e))?;
    Ok(time
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0))
}

pub(crate) fn format_timestamp(seconds: u64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds),
    )
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn env_changes_expand_like_docker() {
        let mut config = json!({"config": {"Env": ["PATH=/usr/bin:/bin", "A=1"], "Cmd": ["sh"]}});
        apply(
            &mut config,
            &ConfigChange::Env("PATH".into(), "/opt/tritonserver/bin:${PATH}".into()),
        );
        apply(
            &mut config,
            &ConfigChange::Env("LD_LIBRARY_PATH".into(), "/x:$LD_LIBRARY_PATH".into()),
        );
        apply(&mut config, &ConfigChange::Entrypoint(vec!["/e.sh".into()]));
        assert_eq!(
            config["config"]["Env"],
            json!([
                "PATH=/opt/tritonserver/bin:/usr/bin:/bin",
                "A=1",
                "LD_LIBRARY_PATH=/x:"
            ])
        );
        assert!(config["config"].get("Cmd").is_none());

        // An image without PATH (docker import) gets Docker's default.
        let mut bare = json!({"config": {}});
        apply(
            &mut bare,
            &ConfigChange::Env("PATH".into(), "/opt/tritonserver/bin:${PATH}".into()),
        );
        assert_eq!(
            bare["config"]["Env"],
            json!([format!("PATH=/opt/tritonserver/bin:{DEFAULT_PATH}")])
        );
        assert_eq!(
            expand(r"\$HOME and ${A}", &[("A".into(), "1".into())]),
            "$HOME and 1"
        );
        assert_eq!(expand(&literal(r"a$b\c"), &[]), r"a$b\c");
    }

    #[test]
    fn timestamps_round_trip() {
        let t = parse_timestamp("2024-10-01T12:30:00.123456789Z").unwrap();
        assert_eq!(format_timestamp(t), "2024-10-01T12:30:00Z");
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z").unwrap(), 0);
    }
}
