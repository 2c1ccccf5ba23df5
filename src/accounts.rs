//! Edits to /etc/passwd, /etc/group, /etc/shadow and /etc/gshadow, the way
//! `userdel` and `useradd` (Debian defaults) would make them, without running
//! anything inside the image.

use crate::error::{Error, Result};

/// The account databases of an image, as text. Shadow files are optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AccountFiles {
    pub passwd: String,
    pub group: String,
    pub shadow: Option<String>,
    pub gshadow: Option<String>,
}

fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.trim().is_empty())
}

fn field(line: &str, index: usize) -> Option<&str> {
    line.split(':').nth(index)
}

fn join(lines: Vec<String>) -> String {
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

impl AccountFiles {
    /// The (uid, gid) of a user, if present.
    pub(crate) fn user(&self, name: &str) -> Option<(u64, u64)> {
        lines(&self.passwd)
            .find(|l| field(l, 0) == Some(name))
            .map(|l| {
                (
                    field(l, 2).and_then(|v| v.parse().ok()).unwrap_or(u64::MAX),
                    field(l, 3).and_then(|v| v.parse().ok()).unwrap_or(u64::MAX),
                )
            })
    }

    fn user_with_uid(&self, uid: u64) -> Option<String> {
        lines(&self.passwd)
            .find(|l| field(l, 2).and_then(|v| v.parse::<u64>().ok()) == Some(uid))
            .and_then(|l| field(l, 0))
            .map(String::from)
    }

    fn group_with_gid(&self, gid: u64) -> Option<String> {
        lines(&self.group)
            .find(|l| field(l, 2).and_then(|v| v.parse::<u64>().ok()) == Some(gid))
            .and_then(|l| field(l, 0))
            .map(String::from)
    }

    /// `userdel NAME`: removes the user, its private group (same name, no
    /// other members) and its memberships in other groups. Absent users are
    /// ignored, as `userdel ... || true` does.
    pub(crate) fn remove_user(&mut self, name: &str) {
        let Some((_, gid)) = self.user(name) else {
            return;
        };
        let keep = |l: &&str| field(l, 0) != Some(name);
        self.passwd = join(lines(&self.passwd).filter(keep).map(String::from).collect());
        if let Some(shadow) = &self.shadow {
            self.shadow = Some(join(lines(shadow).filter(keep).map(String::from).collect()));
        }
        let private_group = lines(&self.group).any(|l| {
            field(l, 0) == Some(name)
                && field(l, 2).and_then(|v| v.parse::<u64>().ok()) == Some(gid)
                && field(l, 3).unwrap_or("").is_empty()
        });
        let strip_member = |line: &str, members_field: usize| -> String {
            let mut parts: Vec<String> = line.split(':').map(String::from).collect();
            if let Some(members) = parts.get_mut(members_field) {
                *members = members
                    .split(',')
                    .filter(|m| !m.is_empty() && *m != name)
                    .collect::<Vec<_>>()
                    .join(",");
            }
            parts.join(":")
        };
        let edit = |text: &str, members_field: usize| -> String {
            join(
                lines(text)
                    .filter(|l| !(private_group && field(l, 0) == Some(name)))
                    .map(|l| strip_member(l, members_field))
                    .collect(),
            )
        };
        self.group = edit(&self.group, 3);
        if let Some(gshadow) = &self.gshadow {
            self.gshadow = Some(edit(gshadow, 3));
        }
    }

    /// `useradd NAME` with a private group, both with id `id`, as Debian's
    /// useradd writes them (no home directory is created). `days` is the
    /// password-change date in days since the epoch.
    pub(crate) fn add_user(&mut self, name: &str, id: u64, days: u64) -> Result<()> {
        if let Some(other) = self.user_with_uid(id) {
            return Err(Error::new(format!(
                "the min image's user {other:?} already has uid {id}, which {name} needs"
            ))
            .hint(format!(
                "use a min image where uid {id} is free (compose.py would fail here too)"
            )));
        }
        if let Some(other) = self.group_with_gid(id) {
            return Err(Error::new(format!(
                "the min image's group {other:?} already has gid {id}, which {name} needs"
            ))
            .hint(format!(
                "use a min image where gid {id} is free (compose.py would fail here too)"
            )));
        }
        self.passwd
            .push_str(&format!("{name}:x:{id}:{id}::/home/{name}:/bin/sh\n"));
        self.group.push_str(&format!("{name}:x:{id}:\n"));
        if let Some(shadow) = &mut self.shadow {
            shadow.push_str(&format!("{name}:!:{days}:0:99999:7:::\n"));
        }
        if let Some(gshadow) = &mut self.gshadow {
            gshadow.push_str(&format!("{name}:!::\n"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ubuntu() -> AccountFiles {
        AccountFiles {
            passwd: "root:x:0:0:root:/root:/bin/bash\nubuntu:x:1000:1000:Ubuntu:/home/ubuntu:/bin/bash\n".into(),
            group: "root:x:0:\nadm:x:4:syslog,ubuntu\nubuntu:x:1000:\n".into(),
            shadow: Some("root:*:19000:0:99999:7:::\nubuntu:!:19000:0:99999:7:::\n".into()),
            gshadow: Some("root:*::\nadm:*::syslog,ubuntu\nubuntu:!::\n".into()),
        }
    }

    #[test]
    fn replaces_ubuntu_user_like_userdel_useradd() {
        let mut files = ubuntu();
        files.remove_user("ubuntu");
        files.remove_user("tensorrt-server");
        files.add_user("triton-server", 1000, 20000).unwrap();
        assert_eq!(
            files.passwd,
            "root:x:0:0:root:/root:/bin/bash\ntriton-server:x:1000:1000::/home/triton-server:/bin/sh\n"
        );
        assert_eq!(
            files.group,
            "root:x:0:\nadm:x:4:syslog\ntriton-server:x:1000:\n"
        );
        assert_eq!(
            files.shadow.as_deref(),
            Some("root:*:19000:0:99999:7:::\ntriton-server:!:20000:0:99999:7:::\n")
        );
        assert_eq!(
            files.gshadow.as_deref(),
            Some("root:*::\nadm:*::syslog\ntriton-server:!::\n")
        );
        assert_eq!(files.user("triton-server"), Some((1000, 1000)));
    }

    #[test]
    fn refuses_a_taken_uid() {
        let mut files = ubuntu();
        let err = files.add_user("triton-server", 1000, 0).unwrap_err();
        assert!(
            err.message().contains("\"ubuntu\" already has uid 1000"),
            "{err}"
        );
    }
}
