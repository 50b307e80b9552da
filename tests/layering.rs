//! The layers hold (see the crate docs): the I/O-free core in `src/proto/` reaches no
//! runtime, thread, clock or entropy and imports only what it may; every `unsafe` block and
//! libc call sits in `src/sys/`; and no module folder imports a module that imports it back.
//!
//! Plain text scanning of the source tree, after glommio's tests/linters.rs: comments are
//! skipped, and so is test-only code (`#[cfg(test)]` items) where the rule is about what the
//! library does when it runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// What `src/proto/` must not name outside its tests.
const PROTO_FORBIDDEN: [(&str, &str); 6] = [
    ("glommio", "the driver is the only layer that touches glommio"),
    ("std::thread", "the core never blocks or spawns threads"),
    ("thread::", "the core never blocks or spawns threads"),
    (
        "Instant::now",
        "the core never reads the clock: take `now` from the driver",
    ),
    (
        "SystemTime::now",
        "the core never reads the clock: take the time from the driver",
    ),
    (
        "RandomState",
        "the core draws no entropy: take a seed from the driver",
    ),
];

/// The only crate paths `src/proto/` may import: itself, the address value, and the
/// descriptor borrow behind a transport's socket options.
const PROTO_MAY_IMPORT: [&str; 3] = ["crate::proto", "crate::addr", "crate::sys::fd"];

/// One source file: its path below `src/` and its code without comments, line by line.
struct Source {
    path: String,
    lines: Vec<String>,
}

impl Source {
    /// The code lines outside `#[cfg(test)]` items.
    fn runtime_lines(&self) -> Vec<(usize, &str)> {
        let mut out = Vec::new();
        let mut skip: Option<(i64, bool)> = None;
        for (i, line) in self.lines.iter().enumerate() {
            if let Some((depth, opened)) = skip.as_mut() {
                let code = without_strings(line);
                *depth += code.matches('{').count() as i64 - code.matches('}').count() as i64;
                *opened |= code.contains('{');
                if (*opened && *depth <= 0) || (!*opened && code.trim_end().ends_with(';')) {
                    skip = None;
                }
                continue;
            }
            if line.trim() == "#[cfg(test)]" {
                skip = Some((0, false));
                continue;
            }
            out.push((i + 1, line.as_str()));
        }
        out
    }

    /// Every line, as code.
    fn all_lines(&self) -> impl Iterator<Item = (usize, &str)> {
        self.lines.iter().enumerate().map(|(i, l)| (i + 1, l.as_str()))
    }

    /// The top-level module the file belongs to (`src/driver/port.rs` → `driver`).
    fn module(&self) -> &str {
        let first = self.path.split('/').next().unwrap_or("");
        first.strip_suffix(".rs").unwrap_or(first)
    }
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let text = fs::read_to_string(&file).unwrap();
            let path = file
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            Source {
                path,
                lines: text.lines().map(strip_comment).collect(),
            }
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The line without its `//` comment (doc comments included); a `//` inside a string
/// literal is not a comment.
fn strip_comment(line: &str) -> String {
    let mut in_str = false;
    let mut escaped = false;
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if in_str => escaped = true,
            b'"' => in_str = !in_str,
            b'/' if !in_str && bytes.get(i + 1) == Some(&b'/') => return line[..i].to_owned(),
            _ => {}
        }
    }
    line.to_owned()
}

/// The line with the contents of its string and char literals blanked out.
fn without_strings(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_str = false;
    let mut escaped = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    in_str = false;
                    out.push('"');
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push('"');
            }
            // A char literal such as '{' or '\'' (not a lifetime: those have no closing quote).
            '\'' => {
                let rest: String = chars.clone().take(4).collect();
                match rest.find('\'') {
                    Some(end) if end > 0 => {
                        for _ in 0..=end {
                            chars.next();
                        }
                        out.push_str("' '");
                    }
                    _ => out.push(c),
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// True if `word` occurs in `code` as a whole word.
fn has_word(code: &str, word: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(word).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// The libc functions `code` calls (`libc::poll(`), as opposed to the constants it names.
fn libc_calls(code: &str) -> Vec<String> {
    code.match_indices("libc::")
        .filter_map(|(i, m)| {
            let rest = &code[i + m.len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            rest[name.len()..].trim_start().starts_with('(').then_some(name)
        })
        .collect()
}

#[test]
fn proto_is_io_free() {
    let mut problems = Vec::new();
    for src in sources().iter().filter(|s| s.path.starts_with("proto/")) {
        for (n, line) in src.runtime_lines() {
            let code = without_strings(line);
            for (word, why) in PROTO_FORBIDDEN {
                if code.contains(word) {
                    problems.push(format!(
                        "src/{}:{n}: `{word}`: {why}\n    {}",
                        src.path,
                        line.trim()
                    ));
                }
            }
        }
        for (n, line) in src.all_lines() {
            for (i, _) in line.match_indices("crate::") {
                let path: String = line[i..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                if !PROTO_MAY_IMPORT.iter().any(|ok| path.starts_with(ok)) {
                    problems.push(format!(
                        "src/{}:{n}: proto uses `{path}`; it may use only {PROTO_MAY_IMPORT:?}",
                        src.path
                    ));
                }
            }
        }
    }
    let mod_rs = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/proto/mod.rs")).unwrap();
    if !mod_rs.contains("#![forbid(unsafe_code)]") {
        problems.push("src/proto/mod.rs: lost #![forbid(unsafe_code)]".to_owned());
    }
    assert!(
        problems.is_empty(),
        "the I/O-free core is not:\n{}",
        problems.join("\n")
    );
}

#[test]
fn unsafe_and_libc_calls_live_in_sys() {
    let mut problems = Vec::new();
    for src in sources().iter().filter(|s| !s.path.starts_with("sys/")) {
        for (n, line) in src.all_lines() {
            let code = without_strings(line);
            if has_word(&code, "unsafe") {
                problems.push(format!("src/{}:{n}: `unsafe` outside src/sys/", src.path));
            }
            for call in libc_calls(&code) {
                problems.push(format!(
                    "src/{}:{n}: calls libc::{call} outside src/sys/ (give it a safe function there)",
                    src.path
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every `crate::X` a file names, as top-level module names: `crate::{A, b::C}` gives the
/// modules of `A` (through lib.rs's re-exports) and `b`.
fn referenced_modules(
    code: &str,
    modules: &BTreeSet<String>,
    reexports: &BTreeMap<String, String>,
) -> Vec<String> {
    references(code, modules, reexports)
        .into_iter()
        .map(|(_, m)| m)
        .collect()
}

/// As [`referenced_modules`], each with the line it is on.
fn references(
    code: &str,
    modules: &BTreeSet<String>,
    reexports: &BTreeMap<String, String>,
) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, m) in code.match_indices("crate::") {
        let rest = &code[i + m.len()..];
        let heads: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(group.len(), |(j, _)| j);
            split_top(&group[..end])
        } else {
            vec![rest]
        };
        let line = code[..i].matches('\n').count() + 1;
        for head in heads {
            let name: String = head
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if modules.contains(&name) {
                out.push((line, name));
            } else if let Some(module) = reexports.get(&name) {
                out.push((line, module.clone()));
            }
        }
    }
    out
}

/// `a, b::{c, d}, e` split at its top-level commas.
fn split_top(list: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in list.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&list[start..]);
    parts
}

/// The names lib.rs re-exports (`pub use driver::engine::{Engine, ...}`), each with the
/// top-level module it comes from.
fn reexports(lib: &Source) -> BTreeMap<String, String> {
    let code = lib.lines.join("\n");
    let mut map = BTreeMap::new();
    for stmt in code.split(';') {
        let Some((_, path)) = stmt.split_once("pub use ") else {
            continue;
        };
        let path = path.trim().trim_start_matches("crate::");
        let Some((module, rest)) = path.split_once("::") else {
            continue;
        };
        let last = rest.rsplit("::").next().unwrap_or(rest);
        let names = last.trim_start_matches('{').trim_end_matches('}');
        for name in split_top(names) {
            map.insert(name.trim().to_owned(), module.to_owned());
        }
    }
    // `pub mod shard { pub use crate::driver::tasks::... }`.
    map.insert("shard".to_owned(), "driver".to_owned());
    map
}

/// The library's module graph: top-level module → the top-level modules it names.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let sources = sources();
    let lib = sources.iter().find(|s| s.path == "lib.rs").unwrap();
    let reexports = reexports(lib);
    // The binary's modules (main.rs, cli/) name the library as `weft::`, not `crate::`.
    let library = |s: &&Source| s.path != "lib.rs" && s.path != "main.rs" && !s.path.starts_with("cli/");
    let modules: BTreeSet<String> = sources
        .iter()
        .filter(library)
        .map(|s| s.module().to_owned())
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> =
        modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for src in sources.iter().filter(library) {
        let code = src.lines.join("\n");
        for to in referenced_modules(&code, &modules, &reexports) {
            if to != src.module() {
                graph.get_mut(src.module()).unwrap().insert(to);
            }
        }
    }
    graph
}

#[test]
fn module_folders_import_no_cycle() {
    let graph = module_graph();
    for (from, to) in &graph {
        eprintln!("{from} -> {}", to.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    // A module on a cycle reaches itself; the path found is the cycle.
    let mut cycles = Vec::new();
    for start in graph.keys() {
        let mut paths: Vec<Vec<&String>> = vec![vec![start]];
        let mut seen = BTreeSet::new();
        while let Some(path) = paths.pop() {
            let last = *path.last().unwrap();
            for next in &graph[last] {
                if next == start {
                    let cycle: Vec<&str> = path.iter().map(|s| s.as_str()).chain([start.as_str()]).collect();
                    cycles.push(cycle.join(" -> "));
                } else if seen.insert(next) {
                    let mut longer = path.clone();
                    longer.push(next);
                    paths.push(longer);
                }
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "module folders import each other:\n{}",
        cycles.join("\n")
    );
    assert!(
        graph["proto"].iter().all(|m| m == "addr" || m == "sys"),
        "proto depends on {:?}",
        graph["proto"]
    );
    assert!(graph["sys"].is_empty(), "sys depends on {:?}", graph["sys"]);
}

#[test]
fn internal_code_imports_from_defining_modules() {
    let sources = sources();
    let lib = sources.iter().find(|s| s.path == "lib.rs").unwrap();
    let reexports = reexports(lib);
    let none = BTreeSet::new();
    let mut problems = Vec::new();
    for src in &sources {
        if src.path == "lib.rs" || src.path == "main.rs" || src.path.starts_with("cli/") {
            continue;
        }
        for (n, module) in references(&src.lines.join("\n"), &none, &reexports) {
            problems.push(format!(
                "src/{}:{n}: imports through lib.rs's re-exports; name the defining module (in {module})",
                src.path
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn scanner_sees_what_it_should() {
    assert_eq!(strip_comment("let x = 1; // unsafe"), "let x = 1; ");
    assert_eq!(
        strip_comment(r#"let u = "http://x"; // c"#),
        r#"let u = "http://x"; "#
    );
    assert_eq!(without_strings(r#"f("{unsafe}", '{')"#), r#"f("", ' ')"#);
    assert!(has_word("unsafe { x }", "unsafe"));
    assert!(!has_word("#![forbid(unsafe_code)]", "unsafe"));
    assert_eq!(libc_calls("libc::poll(fds, 2, -1) == libc::EINTR"), vec!["poll"]);
    let modules: BTreeSet<String> = ["driver", "proto"].map(String::from).into();
    let reexports: BTreeMap<String, String> = [("Address".to_owned(), "addr".to_owned())].into();
    assert_eq!(
        referenced_modules(
            "use crate::{Address, driver::x::{A, B}};\nuse crate::proto::Y;",
            &modules,
            &reexports
        ),
        vec!["addr", "driver", "proto"]
    );
    assert_eq!(
        references("x\nuse crate::{\n    Address,\n};", &BTreeSet::new(), &reexports),
        vec![(2, "addr".to_owned())]
    );
    let src = Source {
        path: "proto/x.rs".to_owned(),
        lines: [
            "a",
            "#[cfg(test)]",
            "fn t() {",
            "  b",
            "}",
            "c",
            "#[cfg(test)]",
            "use d;",
            "e",
        ]
        .map(String::from)
        .into(),
    };
    let kept: Vec<&str> = src.runtime_lines().into_iter().map(|(_, l)| l).collect();
    assert_eq!(kept, ["a", "c", "e"]);
}
