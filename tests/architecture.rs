//! The shape of the code, checked: module imports run down the floors
//! (never up, never in a circle, nor between the files of a folder), and no function in `src/` is longer than
//! 80 lines. A new module gets a floor in [`FLOORS`] when it is added.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crate's top-level modules, lowest floor first. A module may import
/// from its own floor or the floors below it, never from above.
const FLOORS: &[&[&str]] = &[
    &["error"],
    // Formats and helpers that know nothing of images.
    &[
        "digest", "progress", "scratch", "config", "accounts", "elf", "pysource",
    ],
    &["layer", "tree", "spool", "entrylog", "listed"],
    &["image"],
    // Documents, the cache, and what Triton is.
    &["manifest", "store", "triton"],
    // Where images come from and go to; reading them.
    &["transport", "scan"],
    &["deps", "provenance", "local", "request"],
    &["sbom", "slim", "plan"],
    &["render", "execute", "verify"],
    &["compose"],
    &["catalog", "serve", "cli"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for the crate
/// roots).
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// The code of a Rust file with comments, strings and character literals
/// blanked (newlines kept, so line numbers stay).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('#') || next == Some('"')) && !ident_before(&chars, i) {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            let closes = |k: usize| {
                chars.get(k) == Some(&'"') && (1..=hashes).all(|h| chars.get(k + h) == Some(&'#'))
            };
            while j < chars.len() && !closes(j) {
                j += 1;
            }
            let end = (j + 1 + hashes).min(chars.len());
            out.extend(chars[i..end].iter().map(|&c| blank(c)));
            i = end;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && is_char_literal(&chars, i) {
            let mut j = i + 1;
            if chars[j] == '\\' {
                j += 1;
            }
            while chars[j] != '\'' {
                j += 1;
            }
            out.extend(std::iter::repeat_n(' ', j + 1 - i));
            i = j + 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// `'x'`, `'\n'`, `'\u{..}'`, as opposed to a lifetime `'a`.
fn is_char_literal(chars: &[char], i: usize) -> bool {
    match chars.get(i + 1) {
        Some('\\') => true,
        Some(_) => chars.get(i + 2) == Some(&'\''),
        None => false,
    }
}

/// The code before the first `#[cfg(test)]` (tests may import anything).
fn non_test(code: &str) -> &str {
    match code.find("#[cfg(test)]") {
        Some(at) => &code[..at],
        None => code,
    }
}

/// Which top-level modules each module's non-test code names with `crate::`.
fn imports() -> BTreeMap<String, BTreeMap<String, String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let code = code_only(&text);
        let code = non_test(&code);
        let deps = edges.entry(module.clone()).or_default();
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let line = code[..at].lines().count();
            if name != module {
                deps.entry(name)
                    .or_insert_with(|| format!("{}:{line}", file.display()));
            }
        }
    }
    edges
}

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|floor| floor.contains(&module))
}

#[test]
fn imports_run_down_the_floors() {
    let edges = imports();
    let mut wrong = Vec::new();
    for (module, deps) in &edges {
        let Some(own) = floor_of(module) else {
            wrong.push(format!("{module} has no floor in FLOORS"));
            continue;
        };
        for (dep, at) in deps {
            match floor_of(dep) {
                None => wrong.push(format!(
                    "{module} names crate::{dep} ({at}), which has no floor"
                )),
                Some(floor) if floor > own => wrong.push(format!(
                    "{module} (floor {own}) imports {dep} (floor {floor}) at {at}"
                )),
                Some(_) => {}
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports up a floor:\n{}",
        wrong.join("\n")
    );
}

/// A circle in `edges`, if there is one (depth-first search for a back edge).
fn circle_in(edges: &BTreeMap<String, BTreeMap<String, String>>) -> Option<Vec<String>> {
    fn visit(
        module: &str,
        edges: &BTreeMap<String, BTreeMap<String, String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut circle = path[at..].to_vec();
            circle.push(module.to_string());
            return Some(circle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_string());
        for dep in edges.get(module).into_iter().flat_map(|d| d.keys()) {
            if let Some(circle) = visit(dep, edges, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(module.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|module| visit(module, edges, &mut Vec::new(), &mut done))
}

#[test]
fn no_import_circles() {
    if let Some(circle) = circle_in(&imports()) {
        panic!("an import circle: {}", circle.join(" -> "));
    }
}

/// For each folder module, which of its files name which siblings with
/// `super::` (its `mod.rs`, the parent, is left out: children may use it).
fn sibling_imports() -> BTreeMap<PathBuf, BTreeMap<String, BTreeMap<String, String>>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut folders: BTreeMap<PathBuf, BTreeMap<String, BTreeMap<String, String>>> =
        BTreeMap::new();
    for file in &files {
        let (Some(dir), Some(stem)) = (file.parent(), file.file_stem()) else {
            continue;
        };
        if stem == "mod" || dir == src() {
            continue;
        }
        let stem = stem.to_string_lossy().into_owned();
        let siblings: BTreeSet<String> = files
            .iter()
            .filter(|f| f.parent() == Some(dir))
            .filter_map(|f| f.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .chain(std::fs::read_dir(dir).unwrap().filter_map(|e| {
                let path = e.ok()?.path();
                path.is_dir()
                    .then(|| path.file_name().unwrap().to_string_lossy().into_owned())
            }))
            .filter(|name| name != "mod" && *name != stem)
            .collect();
        let text = std::fs::read_to_string(file).unwrap();
        let code = code_only(&text);
        let code = non_test(&code);
        let deps = folders
            .entry(dir.to_path_buf())
            .or_default()
            .entry(stem)
            .or_default();
        for (at, _) in code.match_indices("super::") {
            let name: String = code[at + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let line = code[..at].lines().count();
            if siblings.contains(&name) {
                deps.entry(name)
                    .or_insert_with(|| format!("{}:{line}", file.display()));
            }
        }
    }
    folders
}

#[test]
fn no_import_circles_between_the_files_of_a_folder() {
    let mut circles = Vec::new();
    for (dir, edges) in sibling_imports() {
        if let Some(circle) = circle_in(&edges) {
            circles.push(format!("{}: {}", dir.display(), circle.join(" -> ")));
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

/// Each `fn` of a file, with its first line and its length in lines.
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let bytes = code.as_bytes();
    let line_at = |at: usize| code[..at].matches('\n').count() + 1;
    let mut out = Vec::new();
    let mut search = 0;
    while let Some(found) = code[search..].find("fn ") {
        let at = search + found;
        search = at + 3;
        let word_start =
            at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        if !word_start {
            continue;
        }
        let name: String = code[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        // The body: the first `{` before any `;` (a declaration has none).
        let Some(open) = code[at..].find(['{', ';']).map(|o| at + o) else {
            continue;
        };
        if bytes[open] == b';' {
            continue;
        }
        let mut depth = 0;
        let mut close = open;
        for (i, b) in bytes[open..].iter().enumerate() {
            match b {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.push((name, line_at(at), line_at(close) - line_at(at) + 1));
    }
    out
}

#[test]
fn no_function_is_longer_than_80_lines() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut long = Vec::new();
    for file in files {
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        for (name, line, length) in functions(&code) {
            if length > 80 {
                long.push(format!("{}:{line} {name}: {length} lines", file.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these at their natural seams:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_check() {
    // The blanking keeps code and drops what only looks like it.
    let code = code_only("let a = \"crate::plan {\"; // crate::x {\nlet b = '{'; crate::tree::X");
    assert!(!code.contains("crate::plan") && !code.contains("crate::x"));
    assert!(code.contains("crate::tree::X"));
    assert_eq!(code.matches('{').count(), 0);
    let fns = functions("fn a() {\n{\n}\n}\nfn b();\nfn c() { }");
    assert_eq!(fns, vec![("a".to_string(), 1, 4), ("c".to_string(), 6, 1)]);
    // The real tree is read.
    assert!(imports()
        .get("compose")
        .is_some_and(|d| d.contains_key("plan")));
    let folders = sibling_imports();
    let compose = &folders[&src().join("compose")];
    assert!(compose["target"].contains_key("workdir"));
    // And a circle is found.
    let edges: BTreeMap<String, BTreeMap<String, String>> = [("a", "b"), ("b", "c"), ("c", "a")]
        .into_iter()
        .map(|(from, to)| (from.into(), BTreeMap::from([(to.into(), String::new())])))
        .collect();
    assert_eq!(circle_in(&edges).map(|c| c.len()), Some(4));
}
