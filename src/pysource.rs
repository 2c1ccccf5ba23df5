//! The modules a python source file imports, read without running it.
//!
//! A python-based backend (`backends/NAME/model.py`, as vllm's) runs in the
//! python backend's interpreter, so what it imports must be in the image.
//! This is a lexer, not a parser: it joins physical lines into logical ones
//! (brackets, backslashes), blanks out strings and comments, and reads the
//! `import` and `from ... import` statements. Relative imports are the
//! backend's own. An import inside a `try:` block (or its handlers), or
//! under `if TYPE_CHECKING:`, is *optional*: carried when found, never
//! reported missing, since the code expects it may fail.

/// One imported module.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Import {
    /// The dotted module name, as written (`a.b` for `from a.b import c`).
    pub module: String,
    pub optional: bool,
}

impl Import {
    /// The top-level package: `a` for `a.b.c`.
    pub(crate) fn top_level(&self) -> &str {
        self.module.split('.').next().unwrap_or(&self.module)
    }
}

/// The absolute imports of a source file, in order of appearance, each once
/// (required wins over optional).
pub(crate) fn imports(source: &str) -> Vec<Import> {
    let mut out: Vec<Import> = Vec::new();
    let mut guards: Vec<(usize, bool)> = Vec::new(); // (indent, is a try)
    for line in logical_lines(source) {
        let text = line.text.trim();
        if text.is_empty() {
            continue;
        }
        let continues_try = ["except", "else", "finally"]
            .iter()
            .any(|k| starts_with_keyword(text, k));
        while let Some(&(indent, is_try)) = guards.last() {
            if line.indent < indent || (line.indent == indent && !(is_try && continues_try)) {
                guards.pop();
            } else {
                break;
            }
        }
        let optional = !guards.is_empty();
        if starts_with_keyword(text, "try") && text.ends_with(':') {
            guards.push((line.indent, true));
            continue;
        }
        if is_type_checking_guard(text) {
            guards.push((line.indent, false));
            continue;
        }
        for statement in text.split(';') {
            for module in statement_imports(statement.trim()) {
                match out.iter_mut().find(|i| i.module == module) {
                    Some(seen) => seen.optional &= optional,
                    None => out.push(Import { module, optional }),
                }
            }
        }
    }
    out
}

fn starts_with_keyword(text: &str, keyword: &str) -> bool {
    text.strip_prefix(keyword)
        .is_some_and(|rest| rest.is_empty() || !is_name_char(rest.chars().next().unwrap_or(' ')))
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn is_type_checking_guard(text: &str) -> bool {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    compact == "ifTYPE_CHECKING:" || compact == "iftyping.TYPE_CHECKING:"
}

/// The modules one simple statement imports.
fn statement_imports(statement: &str) -> Vec<String> {
    // A compound statement's body on the same line: `if x: import y`.
    let statement = match statement.find(':') {
        Some(colon)
            if !starts_with_keyword(statement, "import")
                && !starts_with_keyword(statement, "from") =>
        {
            statement[colon + 1..].trim()
        }
        _ => statement,
    };
    if let Some(rest) = statement.strip_prefix("import") {
        if !rest.starts_with(char::is_whitespace) {
            return Vec::new();
        }
        return rest
            .split(',')
            .filter_map(|part| dotted_name(part.split_whitespace().next()?))
            .collect();
    }
    if let Some(rest) = statement.strip_prefix("from") {
        let mut words = rest.split_whitespace();
        let (Some(module), Some("import")) = (words.next(), words.next()) else {
            return Vec::new();
        };
        if !rest.starts_with(char::is_whitespace) || module.starts_with('.') {
            return Vec::new(); // relative: the backend's own
        }
        return dotted_name(module).into_iter().collect();
    }
    Vec::new()
}

/// A dotted name made of identifiers, or nothing.
fn dotted_name(text: &str) -> Option<String> {
    let valid = !text.is_empty()
        && text.split('.').all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && part.chars().all(is_name_char)
        });
    valid.then(|| text.to_string())
}

struct LogicalLine {
    indent: usize,
    /// The code, with strings replaced by `""` and comments dropped.
    text: String,
}

/// Joins physical lines into logical ones, as python's tokenizer does.
fn logical_lines(source: &str) -> Vec<LogicalLine> {
    let mut lines = Vec::new();
    let mut text = String::new();
    let mut indent: Option<usize> = None;
    let mut depth = 0usize;
    let mut chars = source.chars().peekable();
    let mut at_line_start = true;
    let mut column = 0usize;
    while let Some(c) = chars.next() {
        if at_line_start {
            match c {
                ' ' => {
                    column += 1;
                    continue;
                }
                '\t' => {
                    column = (column / 8 + 1) * 8;
                    continue;
                }
                _ => {
                    at_line_start = false;
                    if indent.is_none() && c != '\n' && c != '#' {
                        indent = Some(column);
                    }
                }
            }
        }
        match c {
            '#' => {
                while chars.peek().is_some_and(|&n| n != '\n') {
                    chars.next();
                }
            }
            '\\' if chars.peek() == Some(&'\n') => {
                chars.next();
                text.push(' ');
            }
            '"' | '\'' => {
                skip_string(c, &mut chars);
                text.push_str("\"\"");
            }
            '(' | '[' | '{' => {
                depth += 1;
                text.push(c);
            }
            ')' | ']' | '}' => {
                depth = depth.saturating_sub(1);
                text.push(c);
            }
            '\n' if depth > 0 => text.push(' '),
            '\n' => {
                if let Some(indent) = indent.take() {
                    lines.push(LogicalLine {
                        indent,
                        text: std::mem::take(&mut text),
                    });
                }
                text.clear();
                at_line_start = true;
                column = 0;
            }
            _ => text.push(c),
        }
    }
    if let Some(indent) = indent {
        lines.push(LogicalLine { indent, text });
    }
    lines
}

/// Skips a string literal whose opening quote was `quote` (its prefix, if
/// any, is already in the text and harmless). Backslashes escape the next
/// character, which is right for raw strings too as far as ending goes.
fn skip_string(quote: char, chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    let mut lookahead = chars.clone();
    let triple = lookahead.next() == Some(quote) && lookahead.next() == Some(quote);
    if triple {
        chars.next();
        chars.next();
    }
    let mut run = 0;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
                run = 0;
            }
            c if c == quote => {
                run += 1;
                if !triple || run == 3 {
                    return;
                }
            }
            '\n' if !triple => return, // unterminated: stop at the line's end
            _ => run = 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modules(source: &str) -> Vec<(String, bool)> {
        imports(source)
            .into_iter()
            .map(|i| (i.module, i.optional))
            .collect()
    }

    #[test]
    fn reads_import_statements() {
        let source = r#"
"""A docstring that says
import not_an_import
"""
import json, os.path as p  # import commented
from vllm.engine import (
    AsyncEngine,
    Args,
)
from . import sibling
from .utils import helper
import numpy as np; import x_y
s = "import nope"
t = 'from nope import x'
if True: import inline
def f():
    from lazy.mod import thing
x = \
    1
"#;
        assert_eq!(
            modules(source),
            [
                ("json", false),
                ("os.path", false),
                ("vllm.engine", false),
                ("numpy", false),
                ("x_y", false),
                ("inline", false),
                ("lazy.mod", false),
            ]
            .map(|(m, o)| (m.to_string(), o))
        );
    }

    #[test]
    fn imports_under_try_or_type_checking_are_optional() {
        let source = "
try:
    import ujson as json
except ImportError:
    import json
else:
    import also_optional
finally:
    import still_optional
import required
if TYPE_CHECKING:
    from typing_only import T
def f():
    try:
        import inner_optional
    except Exception:
        pass
    import inner_required
import json
";
        assert_eq!(
            modules(source),
            [
                ("ujson", true),
                ("json", false),
                ("also_optional", true),
                ("still_optional", true),
                ("required", false),
                ("typing_only", true),
                ("inner_optional", true),
                ("inner_required", false),
            ]
            .map(|(m, o)| (m.to_string(), o))
        );
    }

    #[test]
    fn survives_odd_text() {
        for source in [
            "\"\"\"unterminated",
            "import",
            "from",
            "from x",
            "import 1abc",
            "(((",
            "'\\",
        ] {
            let _ = imports(source);
        }
        assert!(imports("import 1abc").is_empty());
        assert!(imports("important = 1").is_empty());
        assert!(imports("from_x = 1").is_empty());
    }
}
