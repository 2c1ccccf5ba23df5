//! Where the dynamic loader looks for a DT_NEEDED name, in glibc's order:
//! DT_RPATH (the object's, then its loaders', when it has no DT_RUNPATH),
//! LD_LIBRARY_PATH, DT_RUNPATH, the directories of /etc/ld.so.conf (standing
//! in for ld.so.cache), then the default directories.

use std::collections::HashMap;

use crate::elf::ElfInfo;
use crate::layer::ImagePath;

use super::fsview::normalize;

/// What ld.so reads of the image itself before it loads any object:
/// glibc's `ld.so.cache` (`elf/dl-cache.c`, opened for a name that no
/// RPATH or LD_LIBRARY_PATH directory holds) and `ld.so.preload`
/// (`elf/rtld.c`, when present).
pub(crate) const LOADER_FILES: [&str; 2] = ["etc/ld.so.cache", "etc/ld.so.preload"];

const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

/// The search settings of one image.
#[derive(Clone, Debug, Default)]
pub(crate) struct SearchPath {
    /// From the image config's LD_LIBRARY_PATH.
    pub ld_library_path: Vec<String>,
    /// From /etc/ld.so.conf and the files it includes.
    pub conf_dirs: Vec<String>,
}

impl SearchPath {
    pub(crate) fn new(
        ld_library_path: Option<&str>,
        kept: &[&HashMap<ImagePath, Vec<u8>>],
    ) -> Self {
        SearchPath {
            ld_library_path: ld_library_path
                .map(|v| {
                    v.split([':', ';'])
                        .filter(|d| !d.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            conf_dirs: ld_so_conf(kept),
        }
    }

    /// The directories to try for `object`'s needs, in order. `inherited`
    /// holds the DT_RPATH directories of the objects that loaded it.
    pub(crate) fn dirs(
        &self,
        object: &ImagePath,
        info: &ElfInfo,
        inherited: &[ImagePath],
    ) -> Vec<ImagePath> {
        let origin = object.parent().unwrap_or_default();
        let mut dirs = Vec::new();
        if info.runpath.is_empty() {
            dirs.extend(info.rpath.iter().filter_map(|d| expand(d, &origin)));
            dirs.extend(inherited.iter().cloned());
        }
        dirs.extend(
            self.ld_library_path
                .iter()
                .filter_map(|d| expand(d, &origin)),
        );
        dirs.extend(info.runpath.iter().filter_map(|d| expand(d, &origin)));
        dirs.extend(self.conf_dirs.iter().filter_map(|d| expand(d, &origin)));
        dirs.extend(default_dirs(info).into_iter().map(ImagePath::from_static));
        let mut seen = std::collections::HashSet::new();
        dirs.retain(|d| seen.insert(d.clone()));
        dirs
    }

    /// The DT_RPATH directories an object passes on to what it loads.
    pub(crate) fn passed_on(
        &self,
        object: &ImagePath,
        info: &ElfInfo,
        inherited: &[ImagePath],
    ) -> Vec<ImagePath> {
        let origin = object.parent().unwrap_or_default();
        let mut out: Vec<ImagePath> = info
            .rpath
            .iter()
            .filter_map(|d| expand(d, &origin))
            .collect();
        out.extend(inherited.iter().cloned());
        out
    }
}

/// Expands `$ORIGIN`; directories with other tokens or relative to the
/// working directory cannot be judged inside an image and are skipped.
fn expand(dir: &str, origin: &ImagePath) -> Option<ImagePath> {
    let origin = origin.display_abs();
    let dir = dir
        .replace("${ORIGIN}", &origin)
        .replace("$ORIGIN", &origin);
    (dir.starts_with('/') && !dir.contains('$')).then(|| normalize(&dir))
}

/// glibc's trusted directories on Debian and Ubuntu (multiarch first).
fn default_dirs(info: &ElfInfo) -> Vec<&'static str> {
    let mut dirs = match (info.machine, info.is_64) {
        (EM_X86_64, true) => vec!["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"],
        (EM_AARCH64, true) => vec!["lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu"],
        _ => vec![],
    };
    if info.is_64 {
        dirs.extend(["lib64", "usr/lib64"]);
    }
    dirs.extend(["lib", "usr/lib"]);
    dirs
}

/// The directories /etc/ld.so.conf names, following `include` lines into
/// /etc/ld.so.conf.d (the files kept by the scans, first image first).
fn ld_so_conf(kept: &[&HashMap<ImagePath, Vec<u8>>]) -> Vec<String> {
    let main = ImagePath::from_static("etc/ld.so.conf");
    let conf_d = ImagePath::from_static("etc/ld.so.conf.d");
    let mut included: Vec<(&ImagePath, &Vec<u8>)> = kept
        .iter()
        .flat_map(|k| k.iter())
        .filter(|(p, _)| p.parent().as_ref() == Some(&conf_d) && p.file_name().ends_with(b".conf"))
        .collect();
    included.sort_by(|a, b| a.0.cmp(b.0));
    included.dedup_by(|a, b| a.0 == b.0);
    let mut dirs = Vec::new();
    let add = |text: &[u8], dirs: &mut Vec<String>| {
        for line in String::from_utf8_lossy(text).lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if !line.is_empty() && !line.starts_with("include") && line.starts_with('/') {
                dirs.push(line.to_string());
            }
        }
    };
    let has_include = kept.iter().find_map(|k| k.get(&main)).is_none_or(|text| {
        add(text, &mut dirs);
        String::from_utf8_lossy(text)
            .lines()
            .any(|l| l.trim().starts_with("include"))
    });
    if has_include {
        for (_, text) in included {
            add(text, &mut dirs);
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_order_follows_glibc() {
        let kept = HashMap::from([
            (
                ImagePath::from_static("etc/ld.so.conf"),
                b"include /etc/ld.so.conf.d/*.conf\n".to_vec(),
            ),
            (
                ImagePath::from_static("etc/ld.so.conf.d/a.conf"),
                b"# local\n/usr/local/lib\n".to_vec(),
            ),
        ]);
        let search = SearchPath::new(Some("/opt/hpcx/ucx/lib/:"), &[&kept]);
        let info = ElfInfo {
            is_64: true,
            machine: EM_X86_64,
            rpath: vec!["$ORIGIN/../lib".into()],
            ..ElfInfo::default()
        };
        let object = ImagePath::from_static("opt/tritonserver/bin/tritonserver");
        let inherited = [ImagePath::from_static("opt/x")];
        let dirs: Vec<String> = search
            .dirs(&object, &info, &inherited)
            .iter()
            .map(ImagePath::display_abs)
            .collect();
        assert_eq!(
            dirs,
            [
                "/opt/tritonserver/lib",
                "/opt/x",
                "/opt/hpcx/ucx/lib",
                "/usr/local/lib",
                "/lib/x86_64-linux-gnu",
                "/usr/lib/x86_64-linux-gnu",
                "/lib64",
                "/usr/lib64",
                "/lib",
                "/usr/lib"
            ]
        );
        // DT_RUNPATH turns DT_RPATH (and inherited ones) off and comes after LD_LIBRARY_PATH.
        let info = ElfInfo {
            runpath: vec!["${ORIGIN}".into(), "$LIB/x".into()],
            ..info
        };
        let dirs = search.dirs(&object, &info, &inherited);
        assert_eq!(dirs[0].display_abs(), "/opt/hpcx/ucx/lib");
        assert_eq!(dirs[1].display_abs(), "/opt/tritonserver/bin");
    }
}
