//! Python packages installed with pip: which distribution owns a path (the
//! RECORD file of `NAME-VERSION.dist-info`), and where the interpreter looks
//! for a top-level module.

use std::collections::HashMap;

use crate::layer::ImagePath;
use crate::tree::MergedTree;

use super::fsview::normalize;

/// True for the files the scans keep to know python distributions.
pub fn is_record(path: &ImagePath) -> bool {
    path.file_name() == b"RECORD"
        && path
            .parent()
            .is_some_and(|d| d.file_name().ends_with(b".dist-info"))
}

/// Distributions (by dist-info directory) and the files they installed.
#[derive(Default)]
pub struct Dists {
    owner: HashMap<ImagePath, ImagePath>,
    files: HashMap<ImagePath, Vec<ImagePath>>,
}

impl Dists {
    pub fn new(kept: &HashMap<ImagePath, Vec<u8>>) -> Self {
        let mut out = Dists::default();
        for (record, text) in kept.iter().filter(|(p, _)| is_record(p)) {
            let dist = record.parent().expect("RECORD has a parent");
            let site = dist.parent().unwrap_or_default().display_abs();
            let mut files = Vec::new();
            for line in String::from_utf8_lossy(text).lines() {
                let Some(name) = first_csv_field(line) else {
                    continue;
                };
                let path = if name.starts_with('/') {
                    normalize(&name)
                } else {
                    normalize(&format!("{site}/{name}"))
                };
                out.owner
                    .entry(path.clone())
                    .or_insert_with(|| dist.clone());
                files.push(path);
            }
            out.files.insert(dist, files);
        }
        out
    }

    /// The dist-info directory of the distribution that installed `path`.
    pub fn owner(&self, path: &ImagePath) -> Option<&ImagePath> {
        self.owner.get(path)
    }

    pub fn files(&self, dist: &ImagePath) -> &[ImagePath] {
        self.files.get(dist).map_or(&[], Vec::as_slice)
    }
}

fn first_csv_field(line: &str) -> Option<String> {
    let field = if let Some(rest) = line.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    out.push('"');
                } else {
                    break;
                }
            } else {
                out.push(c);
            }
        }
        out
    } else {
        line.split(',').next()?.to_string()
    };
    (!field.is_empty()).then_some(field)
}

/// The directories a Debian or Ubuntu python3 imports from, as far as the
/// tree shows them: /usr/lib/python3/dist-packages and, for every
/// python3.X under /usr/lib and /usr/local/lib, its stdlib directory and
/// its dist-packages and site-packages.
pub fn site_dirs(trees: &[&MergedTree]) -> Vec<ImagePath> {
    let mut dirs = vec![
        ImagePath::from_static("usr/local/lib/python3/dist-packages"),
        ImagePath::from_static("usr/lib/python3/dist-packages"),
    ];
    for base in ["usr/local/lib", "usr/lib"] {
        let base = ImagePath::from_static(base);
        let mut versions: Vec<String> = trees
            .iter()
            .flat_map(|t| t.child_names(&base))
            .filter(|n| n.starts_with("python3."))
            .collect();
        versions.sort();
        versions.dedup();
        for version in versions {
            let dir = base.join(version.as_bytes());
            dirs.push(dir.join(b"dist-packages"));
            dirs.push(dir.join(b"site-packages"));
            dirs.push(dir);
        }
    }
    dirs
}

/// Where a top-level module may live in a site directory.
pub fn module_candidates(site: &ImagePath, module: &str) -> Vec<ImagePath> {
    vec![
        site.join(module.as_bytes()).join(b"__init__.py"),
        site.join(format!("{module}.py").as_bytes()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_record_files() {
        let kept = HashMap::from([(
            ImagePath::from_static(
                "usr/local/lib/python3.12/dist-packages/numpy-1.26.4.dist-info/RECORD",
            ),
            b"numpy/__init__.py,sha256=x,100\n\"numpy/a,b.py\",,\n../../../bin/f2py,sha256=y,5\n"
                .to_vec(),
        )]);
        let dists = Dists::new(&kept);
        let dist = dists
            .owner(&ImagePath::from_static(
                "usr/local/lib/python3.12/dist-packages/numpy/__init__.py",
            ))
            .unwrap();
        assert!(dist.display_abs().ends_with("numpy-1.26.4.dist-info"));
        assert_eq!(dists.files(dist).len(), 3);
        assert!(dists
            .owner(&ImagePath::from_static("usr/local/bin/f2py"))
            .is_some());
        assert!(dists
            .owner(&ImagePath::from_static(
                "usr/local/lib/python3.12/dist-packages/numpy/a,b.py"
            ))
            .is_some());
    }
}
