//! The shape of the code, checked: no import cycle between modules of either crate, no source
//! file over 600 lines, and an ARCHITECTURE.md whose code map names every top-level module.
//!
//! An edge `a -> b` is any path from module `a` into module `b` (`use` trees and inline paths
//! through `crate::`, `super::`, `self::`); a `mod b;` declaration alone is containment, not an
//! import. Cross-crate paths cannot form cycles (harness depends on lnd, never the reverse).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

/// A module's path (`["cluster", "run"]`) and the source text of its file.
struct ModFile {
    path: Vec<String>,
    file: PathBuf,
    text: String,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Every module file of the crate whose `src` is `src` (lib tree only; `main.rs` and `bin/` are
/// separate crate roots that import the library like any other crate).
fn crate_modules(src: &Path) -> Vec<ModFile> {
    let mut out = Vec::new();
    walk(src, src, &mut out);
    out
}

fn walk(src: &Path, dir: &Path, out: &mut Vec<ModFile>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if p != src.join("bin") {
                walk(src, &p, out);
            }
            continue;
        }
        if p.extension().is_none_or(|e| e != "rs") || (dir == src && p.file_name().unwrap() == "main.rs") {
            continue;
        }
        let rel = p.strip_prefix(src).unwrap().with_extension("");
        let mut path: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
        if matches!(path.last().map(String::as_str), Some("mod" | "lib")) {
            path.pop();
        }
        out.push(ModFile { path, file: p.clone(), text: std::fs::read_to_string(&p).unwrap() });
    }
}

/// `text` with comments, string and char literals blanked (newlines kept, so lines still count).
fn strip(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && (i == 0 || !b[i - 1].is_alphanumeric() && b[i - 1] != '_') {
            // Raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            while j < b.len() && !(b[j] == '"' && (0..hashes).all(|h| b.get(j + 1 + h) == Some(&'#'))) {
                j += 1;
            }
            let end = (j + 1 + hashes).min(b.len());
            out.extend(b[i..end].iter().map(|&c| blank(c)));
            i = end;
        } else if c == '"' || c == '\'' && (b.get(i + 2) == Some(&'\'') || next == Some('\\')) {
            // A string, or a char literal ('x' or '\n', '\u{..}'); lifetimes ('a) are left alone.
            let mut j = i + 1;
            while j < b.len() && b[j] != c {
                j += if b[j] == '\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(b.len());
            out.extend(b[i..end].iter().map(|&c| blank(c)));
            i = end;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Expands a `use` tree (`a::{b, c::{d, e as f}}`) into full paths.
fn expand(tree: &str) -> Vec<String> {
    fn go(prefix: &str, t: &str, out: &mut Vec<String>) {
        let t = t.trim();
        let Some(open) = t.find('{') else {
            // `x as y`: the path is `x`.
            let leaf = t.split_whitespace().next().unwrap_or("");
            out.push(format!("{prefix}{leaf}"));
            return;
        };
        let head = t[..open].trim();
        let body = &t[open + 1..t.rfind('}').unwrap_or(t.len())];
        let (mut depth, mut start) = (0, 0);
        let mut parts = Vec::new();
        for (k, ch) in body.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&body[start..k]);
                    start = k + 1;
                }
                _ => {}
            }
        }
        parts.push(&body[start..]);
        for p in parts.into_iter().filter(|p| !p.trim().is_empty()) {
            go(&format!("{prefix}{head}"), p, out);
        }
    }
    let mut out = Vec::new();
    go("", tree, &mut out);
    out
}

/// The module paths `m` refers to, each with its line number: (`super`/`self`/`crate` resolved,
/// inline `mod x { .. }` blocks tracked so `super` inside them means the file's module).
fn references(m: &ModFile, mods: &BTreeSet<Vec<String>>) -> Vec<(Vec<String>, usize)> {
    let text = strip(&m.text);
    let mut refs = Vec::new();
    // Inline modules open at some brace depth; `super` inside one climbs out of it first.
    let mut depth = 0i32;
    let mut inline: Vec<(String, i32)> = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
        } else if c == '{' {
            depth += 1;
        } else if c == '}' {
            depth -= 1;
            if inline.last().is_some_and(|(_, d)| *d == depth) {
                inline.pop();
            }
        } else if ident_char(c) && (i == 0 || !ident_char(chars[i - 1]) && chars[i - 1] != ':') {
            // A word or a path: identifiers joined by `::`.
            let start = i;
            loop {
                while i < chars.len() && ident_char(chars[i]) {
                    i += 1;
                }
                if chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':') && chars.get(i + 2).is_some_and(|c| ident_char(*c)) {
                    i += 2;
                } else {
                    break;
                }
            }
            let word: String = chars[start..i].iter().collect();
            if word == "mod" {
                // `mod name {` opens an inline module.
                let rest: String = chars[i..chars.len().min(i + 80)].iter().collect();
                let name: String = rest.trim_start().chars().take_while(|c| ident_char(*c)).collect();
                let after = rest.trim_start()[name.len()..].trim_start().to_string();
                if after.starts_with('{') {
                    inline.push((name, depth));
                }
            } else if word == "use" {
                let end = chars[i..].iter().position(|&c| c == ';').map_or(chars.len(), |p| i + p);
                let tree: String = chars[i..end].iter().collect();
                let lines_in = tree.matches('\n').count();
                for p in expand(&tree) {
                    if let Some(r) = resolve(m, mods, &inline, &p) {
                        refs.push((r, line));
                    }
                }
                line += lines_in;
                i = end;
            } else if word.contains("::") {
                if let Some(r) = resolve(m, mods, &inline, &word) {
                    refs.push((r, line));
                }
            }
            continue;
        }
        i += 1;
    }
    refs
}

/// The module path `p` names from inside `m` (None for other crates and std).
fn resolve(m: &ModFile, mods: &BTreeSet<Vec<String>>, inline: &[(String, i32)], p: &str) -> Option<Vec<String>> {
    let mut segs: Vec<&str> = p.split("::").filter(|s| !s.is_empty()).collect();
    // A relative path into a child module (`child::f()`, `use child::T`) starts from here.
    let child = |name: &str| mods.contains(&m.path.iter().cloned().chain([name.to_string()]).collect::<Vec<_>>());
    if inline.is_empty() && segs.first().is_some_and(|s| child(s)) {
        segs.insert(0, "self");
    }
    let mut base: Vec<String> = m.path.clone();
    base.extend(inline.iter().map(|(n, _)| n.clone()));
    match segs.first().copied()? {
        "crate" => base.clear(),
        "self" => {}
        "super" => {
            while segs.first() == Some(&"super") {
                base.pop()?;
                segs.remove(0);
            }
            segs.insert(0, "self");
        }
        _ => return None,
    }
    segs.remove(0);
    base.extend(segs.iter().map(|s| s.to_string()));
    // Only the file-level module matters: inline modules belong to their file.
    Some(base)
}

/// The longest known module that is a prefix of `path`.
fn owner<'a>(mods: &'a BTreeSet<Vec<String>>, path: &[String]) -> Option<&'a Vec<String>> {
    (0..=path.len()).rev().find_map(|k| mods.get(&path[..k].to_vec()))
}

/// Import edges between module files: `from -> to` with the first line that makes it.
fn edges(files: &[ModFile]) -> BTreeMap<(Vec<String>, Vec<String>), String> {
    let mods: BTreeSet<Vec<String>> = files.iter().map(|f| f.path.clone()).collect();
    let mut out = BTreeMap::new();
    for f in files {
        for (r, line) in references(f, &mods) {
            let Some(to) = owner(&mods, &r) else { continue };
            if *to != f.path {
                out.entry((f.path.clone(), to.clone())).or_insert_with(|| format!("{}:{line}", f.file.display()));
            }
        }
    }
    out
}

/// Strongly connected components with more than one module (Tarjan), each with its edges.
fn cycles(files: &[ModFile]) -> Vec<Vec<String>> {
    let e = edges(files);
    let names: Vec<Vec<String>> = files.iter().map(|f| f.path.clone()).collect();
    let idx: BTreeMap<&Vec<String>, usize> = names.iter().enumerate().map(|(i, n)| (n, i)).collect();
    let mut adj = vec![Vec::new(); names.len()];
    for (a, b) in e.keys() {
        adj[idx[a]].push(idx[b]);
    }
    struct T<'a> {
        adj: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        sccs: Vec<Vec<usize>>,
    }
    fn visit(t: &mut T, v: usize) {
        t.index[v] = Some(t.next);
        t.low[v] = t.next;
        t.next += 1;
        t.stack.push(v);
        t.on[v] = true;
        for &w in &t.adj[v].clone() {
            match t.index[w] {
                None => {
                    visit(t, w);
                    t.low[v] = t.low[v].min(t.low[w]);
                }
                Some(iw) if t.on[w] => t.low[v] = t.low[v].min(iw),
                _ => {}
            }
        }
        if Some(t.low[v]) == t.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on[w] = false;
                scc.push(w);
                if w == v {
                    break;
                }
            }
            t.sccs.push(scc);
        }
    }
    let n = names.len();
    let mut t = T { adj: &adj, index: vec![None; n], low: vec![0; n], on: vec![false; n], stack: Vec::new(), next: 0, sccs: Vec::new() };
    for v in 0..n {
        if t.index[v].is_none() {
            visit(&mut t, v);
        }
    }
    let show = |v: usize| if names[v].is_empty() { "crate".to_string() } else { names[v].join("::") };
    t.sccs
        .into_iter()
        .filter(|s| s.len() > 1)
        .map(|s| {
            let set: BTreeSet<usize> = s.iter().copied().collect();
            let mut lines: Vec<String> = e.iter().filter(|((a, b), _)| set.contains(&idx[a]) && set.contains(&idx[b])).map(|((a, b), at)| format!("{} -> {} ({at})", show(idx[a]), show(idx[b]))).collect();
            lines.sort();
            lines
        })
        .collect()
}

#[test]
fn no_import_cycle_in_either_crate() {
    let mut found = Vec::new();
    for krate in ["lnd", "harness"] {
        for c in cycles(&crate_modules(&root().join(krate).join("src"))) {
            found.push(format!("{krate}: cycle\n    {}", c.join("\n    ")));
        }
    }
    assert!(found.is_empty(), "module import cycles:\n{}", found.join("\n"));
}

#[test]
fn no_source_file_over_the_limit() {
    let mut long = Vec::new();
    for dir in ["lnd", "harness", "fuzz"] {
        let mut stack = vec![root().join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() && p.file_name().is_some_and(|n| n != "target") {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let n = std::fs::read_to_string(&p).unwrap().lines().count();
                    if n > MAX_LINES {
                        long.push(format!("{} ({n} lines)", p.strip_prefix(root()).unwrap().display()));
                    }
                }
            }
        }
    }
    assert!(long.is_empty(), "files over {MAX_LINES} lines: {long:?}");
}

/// Every top-level module of each crate (and every module under `harness/src/cluster/`) appears in
/// ARCHITECTURE.md as a backticked path, and every backticked `*/src/*` path there exists.
#[test]
fn architecture_md_names_every_module() {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md at the workspace root");
    let mut missing = Vec::new();
    for (krate, sub) in [("lnd", ""), ("harness", ""), ("harness", "cluster")] {
        let dir = root().join(krate).join("src").join(sub);
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if matches!(name.as_str(), "lib.rs" | "mod.rs" | "main.rs") {
                continue;
            }
            let rel = p.strip_prefix(root()).unwrap().display().to_string();
            let shown = if p.is_dir() { format!("`{rel}/`") } else { format!("`{rel}`") };
            if !doc.contains(&shown) {
                missing.push(shown);
            }
        }
    }
    assert!(missing.is_empty(), "ARCHITECTURE.md does not mention {missing:?}");
    let stale: Vec<&str> = doc.split('`').skip(1).step_by(2).filter(|s| (s.starts_with("lnd/") || s.starts_with("harness/")) && !root().join(s.trim_end_matches('/')).exists()).collect();
    assert!(stale.is_empty(), "ARCHITECTURE.md names paths that do not exist: {stale:?}");
}

// The checker itself must be able to fail: synthetic modules with and without a cycle.

fn synthetic(files: &[(&str, &str)]) -> Vec<ModFile> {
    files.iter().map(|(p, t)| ModFile { path: p.split('/').filter(|s| !s.is_empty()).map(String::from).collect(), file: PathBuf::from(p), text: t.to_string() }).collect()
}

#[test]
fn checker_sees_cycles_through_use_trees_super_and_inline_paths() {
    let acyclic = synthetic(&[("", "pub mod a; pub mod b;"), ("a", "use crate::b::{X, y::Z};"), ("b", "pub struct X; /* crate::a::Y */ const S: &str = \"crate::a\";")]);
    assert!(cycles(&acyclic).is_empty());
    let via_use_tree = synthetic(&[("a", "use crate::{b::X, c};"), ("b", "use super::a::Y;"), ("c", "")]);
    assert_eq!(cycles(&via_use_tree).len(), 1);
    let via_inline_path = synthetic(&[("a", "fn f() { crate::b::g() }"), ("b", "fn g() -> super::a::T { super::a::T }")]);
    assert_eq!(cycles(&via_inline_path).len(), 1);
    let parent_and_child = synthetic(&[("p", "pub struct T; fn f() { c::g() }"), ("p/c", "use super::T;")]);
    assert_eq!(cycles(&parent_and_child).len(), 1, "a parent using its child while the child uses the parent");
    // `super` inside an inline test module refers to the file itself: no edge.
    let test_mod = synthetic(&[("a", "mod tests { use super::*; fn t() { crate::b::f() } }"), ("b", "fn f() { crate::a::g() }")]);
    assert_eq!(cycles(&test_mod).len(), 1, "the test module's path into b counts for a");
    let self_only = synthetic(&[("a", "mod tests { use super::*; }")]);
    assert!(cycles(&self_only).is_empty());
}
