//! The shape of the source tree, as the Layout section of the book (`docs/src/development.md`)
//! states it: no import cycle between modules, each folder uses only the folders its Layout row
//! allows (`src/domain/` nothing else of the crate), every folder has a row, and no non-test
//! source file is over 600 lines.
//!
//! Imports are read from the source text: every `crate::…` and `super::…` path outside comments
//! and string literals, resolved to the module (file) it names. An edge between a module and its
//! own parent or child is not a cycle (Rust's `mod` and `super::` make those both ways by nature).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module, as its path from the crate root (`["workflow", "engine"]`); the root is `[]`.
type Module = Vec<String>;

/// One `use` of another module: where it is written.
#[derive(Debug, Clone)]
struct Use {
    file: PathBuf,
    line: usize,
}

/// The modules of a crate's `src/` and which other modules each uses.
#[derive(Debug, Default)]
struct Graph {
    files: BTreeMap<Module, PathBuf>,
    uses: BTreeMap<Module, BTreeMap<Module, Use>>,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).expect("a file under src/");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// `line` without its comment and with string literals emptied, so that paths in prose or in
/// text are not taken for imports.
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
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
            '/' if chars.peek() == Some(&'/') => break,
            _ => out.push(c),
        }
    }
    out
}

/// The module paths named in `code`: `crate::a::b` (as `(None, [a, b])`), `super::x` (as
/// `(Some(1), [x])`), `super::super::y`…, each as written (not yet resolved). Macro calls
/// (`crate::m!`) are not modules.
fn paths_in(code: &str) -> Vec<(Option<usize>, Vec<String>)> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(pos) = code[from..].find(start) {
            let at = from + pos;
            from = at + start.len();
            let boundary =
                at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
            // `super::` inside `crate::…::super` or after another `super::` is handled by the
            // first match of the chain.
            if !boundary || (start == "super::" && code[..at].ends_with("super::")) {
                continue;
            }
            let mut ups = usize::from(start == "super::");
            let mut rest = &code[at + start.len()..];
            while let Some(r) = rest.strip_prefix("super::") {
                ups += 1;
                rest = r;
            }
            let mut segs = Vec::new();
            let mut tail = rest;
            loop {
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                let seg = &tail[..end];
                if seg.is_empty() || !seg.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                {
                    break;
                }
                if tail[end..].starts_with('!') {
                    break;
                }
                segs.push(seg.to_owned());
                match tail[end..].strip_prefix("::") {
                    Some(next) => tail = next,
                    None => break,
                }
            }
            found.push(((start == "super::").then_some(ups), segs));
        }
    }
    found
}

fn scan(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph = Graph::default();
    for f in &files {
        if f == &src.join("main.rs") {
            continue; // the binary: a crate of its own, using the library from outside
        }
        graph.files.insert(module_of(src, f), f.clone());
    }
    let known: BTreeSet<Module> = graph.files.keys().cloned().collect();
    let resolve = |mut path: Module| -> Module {
        while !known.contains(&path) {
            path.pop();
        }
        path
    };
    for (module, file) in graph.files.clone() {
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        for (n, line) in text.lines().enumerate() {
            for (ups, segs) in paths_in(&code_of(line)) {
                let base_len = match ups {
                    None => 0,
                    Some(ups) => match module.len().checked_sub(ups) {
                        Some(len) => len,
                        None => continue,
                    },
                };
                let mut target: Module = module[..base_len].to_vec();
                target.extend(segs);
                let target = resolve(target);
                let related = target.starts_with(&module) || module.starts_with(&target);
                if !related {
                    graph
                        .uses
                        .entry(module.clone())
                        .or_default()
                        .entry(target)
                        .or_insert(Use {
                            file: file.clone(),
                            line: n + 1,
                        });
                }
            }
        }
    }
    graph
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".to_owned()
    } else {
        m.join("::")
    }
}

/// Every cycle (a strongly connected set of two or more modules), each with the uses that close it.
fn cycles(graph: &Graph) -> Vec<String> {
    struct Tarjan<'a> {
        g: &'a Graph,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        found: Vec<Vec<Module>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: &Module) {
            let i = self.index.len();
            self.index.insert(v.clone(), i);
            self.low.insert(v.clone(), i);
            self.stack.push(v.clone());
            for w in self
                .g
                .uses
                .get(v)
                .map(|u| u.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
            {
                if !self.index.contains_key(&w) {
                    self.visit(&w);
                    let lw = self.low[&w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.stack.contains(&w) {
                    let iw = self.index[&w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    let done = &w == v;
                    comp.push(w);
                    if done {
                        break;
                    }
                }
                if comp.len() > 1 {
                    self.found.push(comp);
                }
            }
        }
    }
    let mut t = Tarjan {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for m in graph.files.keys() {
        if !t.index.contains_key(m) {
            t.visit(m);
        }
    }
    t.found
        .iter()
        .map(|comp| {
            let members: BTreeSet<&Module> = comp.iter().collect();
            let mut why = Vec::new();
            for a in comp {
                for (b, at) in graph.uses.get(a).into_iter().flatten() {
                    if members.contains(b) {
                        why.push(format!(
                            "{} uses {} ({}:{})",
                            name(a),
                            name(b),
                            at.file.display(),
                            at.line
                        ));
                    }
                }
            }
            why.sort();
            why.join("; ")
        })
        .collect()
}

/// The Layout table: folder (first component under `src/`, or `lib.rs`) → the
/// folders it may use. A row is `| \`src/x/\` | what lives there | a, b, c |` (or `nothing`).
fn layout_rows(readme: &str) -> BTreeMap<String, BTreeSet<String>> {
    let section = readme
        .split("\n## Layout")
        .nth(1)
        .expect("the Layout page has a '## Layout' section")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    let mut rows = BTreeMap::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 || !cells[1].starts_with("`src/") {
            continue;
        }
        let folder = cells[1]
            .trim_matches('`')
            .trim_start_matches("src/")
            .trim_end_matches('/')
            .trim_end_matches(".rs")
            .to_owned();
        let may: BTreeSet<String> = cells[3]
            .split(',')
            .map(|s| s.trim().trim_matches('`').trim_end_matches('/').to_owned())
            .filter(|s| !s.is_empty() && s != "nothing")
            .collect();
        rows.insert(folder, may);
    }
    rows
}

/// The folder a module belongs to, as the Layout table names it (`lib` for the crate root).
fn folder(m: &Module) -> String {
    m.first().cloned().unwrap_or_else(|| "lib".to_owned())
}

/// Uses that cross folders in a way the table does not allow, and folders the table misses.
fn forbidden(graph: &Graph, rows: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    let folders: BTreeSet<String> = graph.files.keys().map(folder).collect();
    for f in &folders {
        if !rows.contains_key(f) {
            out.push(format!("src/{f} has no row in the Layout table"));
        }
    }
    for row in rows.keys() {
        if !folders.contains(row) {
            out.push(format!(
                "the Layout table names src/{row}, which does not exist"
            ));
        }
    }
    for (a, targets) in &graph.uses {
        let (fa, allowed) = (folder(a), rows.get(&folder(a)));
        for (b, at) in targets {
            let fb = folder(b);
            if fa != fb && allowed.is_some_and(|may| !may.contains(&fb)) {
                out.push(format!(
                    "{} uses {} ({}:{}), but src/{fa} may use only: {}",
                    name(a),
                    name(b),
                    at.file.display(),
                    at.line,
                    allowed
                        .map(|m| m.iter().cloned().collect::<Vec<_>>().join(", "))
                        .unwrap_or_default()
                ));
            }
        }
    }
    out
}

/// The checkout whose `src/` and Layout table are checked: this one, or `LAYOUT_ROOT` (to run the same
/// checks against another tree, e.g. an older commit checked out elsewhere).
fn repo() -> PathBuf {
    std::env::var_os("LAYOUT_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The page that holds the Layout table: the book's `docs/src/development.md`, or the README
/// of a tree from before the book (`LAYOUT_ROOT` may name one).
fn layout_page() -> String {
    let book = repo().join("docs/src/development.md");
    let page = if book.exists() {
        book
    } else {
        repo().join("README.md")
    };
    std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("reading {}: {e}", page.display()))
}

#[test]
fn no_module_imports_another_that_imports_it_back() {
    let graph = scan(&repo().join("src"));
    assert!(graph.files.len() > 50, "the scan found the source files");
    let found = cycles(&graph);
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn each_folder_uses_only_what_the_layout_table_allows() {
    let rows = layout_rows(&layout_page());
    assert_eq!(
        rows.get("domain").map(BTreeSet::len),
        Some(0),
        "the Layout row of src/domain/ says it uses nothing else of the crate"
    );
    let graph = scan(&repo().join("src"));
    let wrong = forbidden(&graph, &rows);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_source_file_is_over_600_lines_outside_its_tests() {
    let mut files = Vec::new();
    rust_files(&repo().join("src"), &mut files);
    let mut long = Vec::new();
    for f in files {
        if f.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("a readable source file");
        let code = text
            .split("\n#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default();
        let n = code.lines().count();
        if n > 600 {
            long.push(format!("{}: {n} lines", f.display()));
        }
    }
    assert!(long.is_empty(), "over 600 lines:\n{}", long.join("\n"));
}

/// The checks above can fail: a made-up crate with a cycle and a forbidden use is caught.
#[test]
fn the_checks_catch_a_cycle_and_a_use_the_layout_forbids() {
    let dir = std::env::temp_dir().join(format!("layout-check-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("domain")).unwrap();
    std::fs::create_dir_all(src.join("store")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod domain;\npub mod store;\n").unwrap();
    std::fs::write(src.join("domain/mod.rs"), "pub mod incident;\n").unwrap();
    std::fs::write(
        src.join("domain/incident.rs"),
        "// crate::store is only named in this comment\nuse crate::store::Store; // \"crate::x\"\n",
    )
    .unwrap();
    std::fs::write(
        src.join("store/mod.rs"),
        "use crate::domain::incident::Incident;\nlet s = \"crate::nothing\";\ncrate::counter!(\"x\");\n",
    )
    .unwrap();
    let graph = scan(&src);
    let found = cycles(&graph);
    let rows = layout_rows(
        "# x\n## Layout\n| folder | holds | may use |\n|---|---|---|\n| `src/domain/` | types | nothing |\n| `src/store/` | SQL | domain |\n| `src/lib.rs` | root | domain, store |\n## Next\n",
    );
    let wrong = forbidden(&graph, &rows);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("domain::incident uses store") && found[0].contains("incident.rs:2"),
        "{found:?}"
    );
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert!(
        wrong[0].starts_with("domain::incident uses store"),
        "{wrong:?}"
    );
    assert_eq!(
        paths_in("use super::super::x::Y;"),
        vec![(Some(2), vec!["x".to_owned()])]
    );
}
