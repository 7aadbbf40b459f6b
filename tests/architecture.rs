//! The rules of ARCHITECTURE.md that a reader cannot see at a glance, checked on the source:
//! the runtime's modules import each other without a circle, and no store module imports a
//! subscriber module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

/// Every module of `runtime/src` by its path (`["store", "jetstream", "commit"]`), with its
/// source minus its unit tests.
fn modules() -> BTreeMap<Module, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Module, String>) {
        for entry in std::fs::read_dir(dir).expect("read runtime/src") {
            let path = entry.expect("entry").path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let mut module = prefix.to_vec();
            if path.is_dir() {
                module.push(name);
                walk(&path, &module, out);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            if name != "mod" && name != "lib" {
                module.push(name);
            }
            let source = std::fs::read_to_string(&path).expect("read a module");
            let without_tests = match source.find("#[cfg(test)]\nmod tests") {
                Some(at) => source[..at].to_owned(),
                None => source,
            };
            out.insert(module, without_tests);
        }
    }
    let mut out = BTreeMap::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/src");
    walk(&root, &[], &mut out);
    out
}

/// The modules `module` names through `crate::`, `super::` or `self::` paths, to the deepest
/// module each path reaches; a module's own ancestors and descendants do not count (a parent
/// declares and re-exports its children).
fn imports(module: &Module, source: &str, known: &BTreeSet<Module>) -> BTreeSet<Module> {
    let mut found = BTreeSet::new();
    let bytes = source.as_bytes();
    for (start, _) in source.char_indices() {
        let rest = &source[start..];
        let head = ["crate::", "super::", "self::"]
            .into_iter()
            .find(|head| rest.starts_with(head));
        if head.is_none()
            || (start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_'))
        {
            continue;
        }
        let path: Vec<&str> = rest
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .next()
            .unwrap_or_default()
            .split("::")
            .filter(|t| !t.is_empty())
            .collect();
        let (mut base, mut tokens) = (Vec::new(), &path[..]);
        match tokens.first() {
            Some(&"crate") => tokens = &tokens[1..],
            Some(&"self") => {
                base = module.clone();
                tokens = &tokens[1..];
            }
            _ => {
                base = module.clone();
                while tokens.first() == Some(&"super") {
                    base.pop();
                    tokens = &tokens[1..];
                }
            }
        }
        let target = (0..=tokens.len()).rev().find_map(|n| {
            let mut candidate = base.clone();
            candidate.extend(tokens[..n].iter().map(|t| t.to_string()));
            known.contains(&candidate).then_some(candidate)
        });
        if let Some(target) = target {
            let related = module.starts_with(&target) || target.starts_with(module);
            if !related {
                found.insert(target);
            }
        }
    }
    found
}

fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let modules = modules();
    let known: BTreeSet<Module> = modules.keys().cloned().collect();
    (modules.iter())
        .map(|(module, source)| (module.clone(), imports(module, source, &known)))
        .collect()
}

#[test]
fn runtime_modules_import_each_other_without_a_circle() {
    let graph = graph();
    assert!(graph.len() > 40, "found only {} modules", graph.len());
    // Depth-first search; a module met again while still on the path closes a circle.
    fn visit<'a>(
        module: &'a Module,
        graph: &'a BTreeMap<Module, BTreeSet<Module>>,
        path: &mut Vec<&'a Module>,
        done: &mut BTreeSet<&'a Module>,
    ) {
        if done.contains(module) {
            return;
        }
        if let Some(at) = path.iter().position(|m| *m == module) {
            let circle: Vec<String> = path[at..].iter().map(|m| m.join("::")).collect();
            panic!(
                "import circle: {} -> {}",
                circle.join(" -> "),
                module.join("::")
            );
        }
        path.push(module);
        for next in &graph[module] {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(module);
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        visit(module, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn no_store_module_imports_a_subscriber_module() {
    for (module, imports) in graph() {
        if module.first().map(String::as_str) != Some("store") {
            continue;
        }
        for target in imports {
            assert_ne!(
                target.first().map(String::as_str),
                Some("subscriber"),
                "{} imports {}",
                module.join("::"),
                target.join("::")
            );
        }
    }
}

#[test]
fn the_checker_sees_imports() {
    // A module that imports its sibling through `super::` and another room through `crate::`.
    let known: BTreeSet<Module> = [
        vec![],
        vec!["a".into()],
        vec!["a".into(), "b".into()],
        vec!["c".into()],
    ]
    .into_iter()
    .collect();
    let found = imports(
        &vec!["a".into(), "b".into()],
        "use super::super::c::Thing; use crate::a::X;",
        &known,
    );
    assert_eq!(found, BTreeSet::from([vec!["c".to_string()]]));
}
