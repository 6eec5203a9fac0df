//! The house rules of ARCHITECTURE.md, checked on the source: which module may import which,
//! no import cycle between files, no string tags for outbox kinds, no known match on the text
//! of kitesync's own errors (Buildkite's own messages are read, by design, in
//! `buildkite/client/message.rs`).
//!
//! The import rules are read off the parsed source (`syn`), not its text: every `use` tree
//! (nested groups, `self`, `super`, `crate`, renames, globs), every path in an expression, a
//! type, a pattern or a macro's tokens that names `crate::…`, `super::…`, `self::…`, a child
//! module or a name a `use` brought in, is resolved to the file of the module it reaches.
//! Items under `#[cfg(test)]` are left out by their attribute; doc comments are attributes,
//! never paths. Modules are derived from the files (`foo.rs`, `foo/mod.rs`, `foo/bar.rs`),
//! so the check holds whatever the layout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use syn::buffer::{Cursor, TokenBuffer};
use syn::visit::{self, Visit};
use syn::{Attribute, ImplItem, Item, Meta, TraitItem, UseTree};

/// What a room may import besides itself.
enum May {
    /// Only these rooms.
    Only(&'static [&'static str]),
    /// Anything but these rooms.
    Not(&'static [&'static str]),
}

/// One import rule of ARCHITECTURE.md. A room is a module path (`"buildkite"`,
/// `"telemetry::metrics_server"`, `"sync::enrich"`): the module and everything under it, whatever
/// files hold it.
struct Rule {
    room: &'static str,
    may: May,
    why: &'static str,
}

/// The import rules of ARCHITECTURE.md ("Import rules"), as data.
const RULES: &[Rule] = &[
    Rule {
        room: "buildkite",
        may: May::Only(&["config", "telemetry::metrics", "net"]),
        why: "the source uses only config, metrics and net",
    },
    Rule {
        room: "store",
        may: May::Not(&["butler", "sync"]),
        why: "the store knows nothing of the sink or of syncing",
    },
    Rule {
        room: "butler",
        may: May::Not(&["store", "sync"]),
        why: "the sink takes neutral items (item.rs)",
    },
    Rule {
        room: "sync",
        may: May::Not(&["delivery::deliver", "app", "butler"]),
        why: "sync/ is where the source meets the store: it takes its parts (client, store, config), never the sink",
    },
    Rule {
        room: "telemetry::metrics_server",
        may: May::Only(&["telemetry::metrics"]),
        why: "a scrape never waits for SQLite: the metrics server reads only the metrics",
    },
];

/// A module path from the crate root: `store::outbox` is `["store", "outbox"]`.
type ModPath = Vec<String>;

/// An import that breaks a rule.
#[derive(Debug, PartialEq)]
struct Breach {
    file: String,
    target: String,
    why: &'static str,
}

/// The files of a source tree (relative to `src/`, with `/`) and the imports between them.
struct Graph {
    /// Each product file's module.
    modules: BTreeMap<String, ModPath>,
    /// The files each file imports (itself left out).
    edges: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    /// Reads and parses every `.rs` file under `src`.
    fn read(src: &Path) -> Graph {
        let mut parsed = BTreeMap::new();
        let mut dirs = vec![src.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("a source directory") {
                let path = entry.expect("a directory entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let name = path.strip_prefix(src).expect("under src");
                    let name = name.to_string_lossy().replace('\\', "/");
                    let text = std::fs::read_to_string(&path).expect("a source file");
                    let ast = syn::parse_file(&text)
                        .unwrap_or_else(|e| panic!("{name} does not parse: {e}"));
                    parsed.insert(name, ast);
                }
            }
        }
        let mut modules: BTreeMap<String, ModPath> = parsed
            .keys()
            .map(|file| (file.clone(), module_of(file)))
            .collect();
        // A file declared only under `#[cfg(test)]` (`#[cfg(test)] mod tests;`) is test code.
        let test_only: BTreeSet<ModPath> = parsed
            .iter()
            .flat_map(|(file, ast)| {
                let here = modules[file].clone();
                ast.items.iter().filter_map(move |item| match item {
                    Item::Mod(m) if m.content.is_none() && is_test(&m.attrs) => {
                        Some([here.clone(), vec![m.ident.to_string()]].concat())
                    }
                    _ => None,
                })
            })
            .collect();
        modules.retain(|_, module| !test_only.iter().any(|t| module.starts_with(t)));
        let mut graph = Graph {
            modules,
            edges: BTreeMap::new(),
        };
        for (file, ast) in &parsed {
            let Some(module) = graph.modules.get(file) else {
                continue;
            };
            let mut reader = Reader {
                graph: &graph,
                file,
                scope: Scope {
                    module: module.clone(),
                    names: BTreeMap::new(),
                },
                found: BTreeSet::new(),
            };
            reader.module(module.clone(), &ast.items);
            let found = reader.found;
            graph.edges.insert(file.clone(), found);
        }
        graph
    }

    /// The file that holds the item at `path`: its longest prefix that is a module file.
    fn file_of(&self, path: &[String]) -> Option<&str> {
        self.modules
            .iter()
            .filter(|(file, module)| path.starts_with(module) && !file.ends_with("main.rs"))
            .max_by_key(|(_, module)| module.len())
            .map(|(file, _)| file.as_str())
    }

    /// The imports that break a rule of `rules`.
    fn breaches(&self, rules: &[Rule]) -> Vec<Breach> {
        let mut breaches = Vec::new();
        for (file, targets) in &self.edges {
            let from = &self.modules[file];
            for target in targets {
                let to = &self.modules[target];
                for rule in rules.iter().filter(|r| in_room(from, r.room)) {
                    let allowed = in_room(to, rule.room)
                        || match rule.may {
                            May::Only(rooms) => rooms.iter().any(|r| in_room(to, r)),
                            May::Not(rooms) => !rooms.iter().any(|r| in_room(to, r)),
                        };
                    if !allowed {
                        breaches.push(Breach {
                            file: file.clone(),
                            target: target.clone(),
                            why: rule.why,
                        });
                    }
                }
            }
        }
        breaches
    }

    /// An import cycle between files, if any (the files along it, the first one repeated).
    fn cycle(&self) -> Option<Vec<String>> {
        // Depth-first search; a file met again while still on the path closes a cycle.
        fn visit(
            file: &str,
            graph: &Graph,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if done.contains(file) {
                return None;
            }
            if let Some(at) = path.iter().position(|f| f == file) {
                let mut cycle = path[at..].to_vec();
                cycle.push(file.to_string());
                return Some(cycle);
            }
            path.push(file.to_string());
            for next in graph.edges.get(file).into_iter().flatten() {
                if let Some(cycle) = visit(next, graph, path, done) {
                    return Some(cycle);
                }
            }
            path.pop();
            done.insert(file.to_string());
            None
        }
        let mut done = BTreeSet::new();
        self.edges
            .keys()
            .find_map(|file| visit(file, self, &mut Vec::new(), &mut done))
    }
}

/// The module of a file: `store/outbox.rs` and `store/outbox/mod.rs` are `store::outbox`.
fn module_of(file: &str) -> ModPath {
    let trimmed = file.trim_end_matches(".rs").trim_end_matches("/mod");
    match trimmed {
        "lib" | "main" => Vec::new(),
        t => t.split('/').map(str::to_string).collect(),
    }
}

/// Whether `module` is `room` (`"a::b"`) or under it.
fn in_room(module: &[String], room: &str) -> bool {
    let room: Vec<&str> = room.split("::").collect();
    module.len() >= room.len() && module.iter().zip(&room).all(|(m, r)| m == r)
}

/// Whether the attributes hold `#[cfg(test)]` (or `#[cfg(all(test, …))]`).
fn is_test(attrs: &[Attribute]) -> bool {
    fn test_only(meta: &Meta) -> bool {
        match meta {
            Meta::Path(path) => path.is_ident("test"),
            Meta::List(list) if list.path.is_ident("all") => list
                .parse_args_with(
                    syn::punctuated::Punctuated::<Meta, syn::Token![,]>::parse_terminated,
                )
                .is_ok_and(|metas| metas.iter().any(test_only)),
            _ => false,
        }
    }
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg") && attr.parse_args::<Meta>().is_ok_and(|m| test_only(&m))
    })
}

/// The attributes of an item.
fn item_attrs(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// The leaves of a use tree: each imported path and the name it binds (none for a glob or
/// `as _`). `use a::{self, b as c, d::*}` gives `a` (as `a`), `a::b` (as `c`), `a::d`.
fn use_leaves(tree: &UseTree, prefix: &[String], out: &mut Vec<(ModPath, Option<String>)>) {
    let with = |ident: &syn::Ident| -> ModPath {
        if ident == "self" {
            prefix.to_vec()
        } else {
            [prefix, &[ident.to_string()]].concat()
        }
    };
    match tree {
        UseTree::Path(p) => use_leaves(&p.tree, &with(&p.ident), out),
        UseTree::Name(n) => {
            let path = with(&n.ident);
            let name = path.last().cloned();
            out.push((path, name));
        }
        UseTree::Rename(r) => {
            let name = (r.rename != "_").then(|| r.rename.to_string());
            out.push((with(&r.ident), name));
        }
        UseTree::Glob(_) => out.push((prefix.to_vec(), None)),
        UseTree::Group(g) => g.items.iter().for_each(|t| use_leaves(t, prefix, out)),
    }
}

/// The `use` trees of a module's items, those of inline modules and test items left out.
#[derive(Default)]
struct Uses<'ast>(Vec<&'ast UseTree>);

impl<'ast> Visit<'ast> for Uses<'ast> {
    fn visit_item(&mut self, item: &'ast Item) {
        if !is_test(item_attrs(item)) && !matches!(item, Item::Mod(_)) {
            visit::visit_item(self, item);
        }
    }
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if u.leading_colon.is_none() {
            self.0.push(&u.tree);
        }
    }
}

/// The names a module can start a path with: its child modules and what its `use`s bring in.
struct Scope {
    module: ModPath,
    names: BTreeMap<String, ModPath>,
}

/// Reads one file's imports.
struct Reader<'g> {
    graph: &'g Graph,
    file: &'g str,
    scope: Scope,
    found: BTreeSet<String>,
}

impl Reader<'_> {
    /// Reads the items of `module` (a file's, or an inline `mod { … }`'s).
    fn module(&mut self, module: ModPath, items: &[Item]) {
        let outer = std::mem::replace(
            &mut self.scope,
            Scope {
                module: module.clone(),
                names: BTreeMap::new(),
            },
        );
        for item in items {
            if let Item::Mod(m) = item {
                if !is_test(&m.attrs) {
                    let child = [module.clone(), vec![m.ident.to_string()]].concat();
                    self.scope.names.insert(m.ident.to_string(), child);
                }
            }
        }
        let mut uses = Uses::default();
        items.iter().for_each(|item| uses.visit_item(item));
        let mut leaves = Vec::new();
        for tree in uses.0 {
            use_leaves(tree, &[], &mut leaves);
        }
        // Twice, so that a `use` may start from a name another `use` brought in.
        for _ in 0..2 {
            for (path, name) in &leaves {
                if let (Some(path), Some(name)) = (self.absolute(path), name) {
                    self.scope.names.insert(name.clone(), path);
                }
            }
        }
        items.iter().for_each(|item| self.visit_item(item));
        self.scope = outer;
    }

    /// The path from the crate root that `path`, written in the current module, names; none
    /// for a path outside the crate (`std::…`, `tokio::…`, a local).
    fn absolute(&self, path: &[String]) -> Option<ModPath> {
        let (first, rest) = path.split_first()?;
        let (mut base, mut rest) = match first.as_str() {
            "crate" => (Vec::new(), rest),
            "self" | "super" => (
                self.scope.module.clone(),
                if first == "self" { rest } else { path },
            ),
            name => {
                let start = self.scope.names.get(name)?;
                return Some([start.as_slice(), rest].concat());
            }
        };
        while let Some(("super", tail)) = rest.split_first().map(|(h, t)| (h.as_str(), t)) {
            base.pop()?;
            rest = tail;
        }
        Some([base.as_slice(), rest].concat())
    }

    /// Records the file `path` reaches, if it names something of the crate in another file.
    fn reach(&mut self, path: &[String]) {
        if let Some(target) = self.absolute(path).and_then(|p| self.graph.file_of(&p)) {
            if target != self.file {
                self.found.insert(target.to_string());
            }
        }
    }

    /// The paths in a macro's tokens (`format!("{}", crate::x::y())`, `$crate::x`).
    fn macro_tokens(&mut self, mut cursor: Cursor) {
        while !cursor.eof() {
            if let Some((inside, _, _, next)) = cursor.any_group() {
                self.macro_tokens(inside);
                cursor = next;
            } else if let Some((ident, mut next)) = cursor.ident() {
                let mut path = vec![ident.to_string()];
                while let Some((ident, after)) = colons(next).and_then(|c| c.ident()) {
                    path.push(ident.to_string());
                    next = after;
                }
                if path.len() > 1 {
                    self.reach(&path);
                }
                cursor = next;
            } else if let Some((_, next)) = cursor.token_tree() {
                cursor = next;
            } else {
                break;
            }
        }
    }
}

/// The cursor past a `::`, if it starts with one.
fn colons(cursor: Cursor) -> Option<Cursor> {
    let (first, next) = cursor.punct()?;
    let (second, next) = next.punct()?;
    (first.as_char() == ':' && second.as_char() == ':').then_some(next)
}

impl<'ast> Visit<'ast> for Reader<'_> {
    fn visit_item(&mut self, item: &'ast Item) {
        if is_test(item_attrs(item)) {
            return;
        }
        match item {
            Item::Mod(m) => {
                if let Some((_, items)) = &m.content {
                    let inner = [self.scope.module.clone(), vec![m.ident.to_string()]].concat();
                    self.module(inner, items);
                }
            }
            Item::Use(u) if u.leading_colon.is_none() => {
                let mut leaves = Vec::new();
                use_leaves(&u.tree, &[], &mut leaves);
                for (path, _) in leaves {
                    self.reach(&path);
                }
            }
            _ => visit::visit_item(self, item),
        }
    }
    fn visit_impl_item(&mut self, item: &'ast ImplItem) {
        let attrs = match item {
            ImplItem::Const(i) => &i.attrs,
            ImplItem::Fn(i) => &i.attrs,
            ImplItem::Type(i) => &i.attrs,
            ImplItem::Macro(i) => &i.attrs,
            _ => return visit::visit_impl_item(self, item),
        };
        if !is_test(attrs) {
            visit::visit_impl_item(self, item);
        }
    }
    fn visit_trait_item(&mut self, item: &'ast TraitItem) {
        let attrs = match item {
            TraitItem::Const(i) => &i.attrs,
            TraitItem::Fn(i) => &i.attrs,
            TraitItem::Type(i) => &i.attrs,
            TraitItem::Macro(i) => &i.attrs,
            _ => return visit::visit_trait_item(self, item),
        };
        if !is_test(attrs) {
            visit::visit_trait_item(self, item);
        }
    }
    /// Attributes (doc comments among them) name no import.
    fn visit_attribute(&mut self, _: &'ast Attribute) {}
    /// `pub(in crate::x)` names a module, it imports nothing from it.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}
    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() && path.segments.len() > 1 {
            let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
            self.reach(&segments);
        }
        visit::visit_path(self, path);
    }
    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        visit::visit_macro(self, mac);
        let buffer = TokenBuffer::new2(mac.tokens.clone());
        self.macro_tokens(buffer.begin());
    }
}

/// The product tree: this crate's `src/`.
fn product() -> Graph {
    Graph::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn every_room_a_rule_names_is_a_module() {
    let graph = product();
    for rule in RULES {
        let named = match rule.may {
            May::Only(rooms) | May::Not(rooms) => rooms,
        };
        for room in std::iter::once(&rule.room).chain(named) {
            assert!(
                graph.modules.values().any(|m| in_room(m, room)),
                "the rule \"{}\" names {room}, which is no module: a move left it checking nothing",
                rule.why
            );
        }
    }
}

#[test]
fn data_walks_one_way() {
    let breaches = product().breaches(RULES);
    assert!(
        breaches.is_empty(),
        "imports that break a rule: {breaches:#?}"
    );
}

#[test]
fn no_import_cycle_between_files() {
    let graph = product();
    if let Some(cycle) = graph.cycle() {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
    assert!(
        graph.edges.values().any(|t| !t.is_empty()),
        "the import graph was read"
    );
}

/// Every product source file (relative to `src/`) with its product text: what comes before
/// its `#[cfg(test)]` module.
fn sources() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("source");
                let product = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
                let name = path
                    .strip_prefix(&root)
                    .expect("under src")
                    .display()
                    .to_string();
                files.insert(name, product);
            }
        }
    }
    files
}

#[test]
fn the_delivery_loops_live_in_deliver() {
    // The delivery loops of every mode live in delivery/deliver.rs.
    for (file, text) in sources() {
        for needle in ["fn deliver_loop", "fn drain", "fn deliver_all"] {
            assert!(
                !text.contains(needle) || file == "delivery/deliver.rs",
                "{needle} in {file}"
            );
        }
    }
}

#[test]
fn kinds_are_types_and_errors_are_fields() {
    for (file, text) in sources() {
        // The kinds' names live in item.rs; migration 6 converts 0.1's rows by name.
        if file != "item.rs" && file != "store/migrate.rs" {
            for tag in ["kind = 'build'", "kind: \"", "== \"build\"", "\"tests\" =>"] {
                assert!(!text.contains(tag), "{file} uses a string tag: {tag}");
            }
        }
        for matched in ["contains(\"(4", "starts_with(\"malformed"] {
            assert!(
                !text.contains(matched),
                "{file} decides by error text: {matched}"
            );
        }
        for (at, _) in text.match_indices("serde_json::to_string") {
            let call = &text[at..(at + 120).min(text.len())];
            let call = call.split(';').next().unwrap_or("");
            assert!(
                !call.contains("unwrap_or_default"),
                "{file} may queue an empty payload when encoding fails: {call}"
            );
        }
    }
}

#[test]
fn the_checks_read_real_imports() {
    // Guards the guard: known imports are found.
    let graph = product();
    let of = |f: &str| graph.edges.get(f).cloned().unwrap_or_default();
    assert!(of("butler/client.rs").contains("item.rs"));
    assert!(of("store/outbox.rs").contains("store/state.rs"));
    assert!(of("telemetry/metrics_server.rs").contains("telemetry/metrics.rs"));
    assert!(
        of("main.rs").is_empty(),
        "main.rs uses the library by its crate name"
    );
    assert!(
        of("store/mod.rs").contains("store/migrate.rs"),
        "children by bare name"
    );
}

/// The checker on a synthetic tree: `files` as (path under `src/`, text).
fn synthetic(files: &[(&str, &str)]) -> Graph {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("a directory");
        std::fs::write(&path, text).expect("a source file");
    }
    Graph::read(dir.path())
}

/// The (file, target) pairs of the breaches of `RULES` in a synthetic tree.
fn breaches_in(files: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut found: Vec<_> = synthetic(files)
        .breaches(RULES)
        .into_iter()
        .map(|b| (b.file, b.target))
        .collect();
    found.sort();
    found
}

/// The rooms of the synthetic trees, with no import between them.
const ROOMS: &[(&str, &str)] = &[
    (
        "lib.rs",
        "pub mod butler;\npub mod item;\npub mod store;\npub mod sync;\n",
    ),
    ("item.rs", "pub enum Kind { Build }\npub struct Item;\n"),
    ("butler/mod.rs", "pub mod wire;\n"),
    ("butler/wire.rs", "pub struct Post;\n"),
    ("sync/mod.rs", "pub mod walk;\n"),
    ("sync/walk.rs", "pub fn walk() {}\n"),
];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut files: Vec<_> = ROOMS.to_vec();
    files.extend_from_slice(extra);
    files
}

fn pair(file: &str, target: &str) -> (String, String) {
    (file.to_string(), target.to_string())
}

#[test]
fn a_group_nested_in_a_group_is_read() {
    let found = breaches_in(&with(&[(
        "store/mod.rs",
        "use crate::{item::{Kind, Item}, butler::wire};\n",
    )]));
    assert_eq!(found, vec![pair("store/mod.rs", "butler/wire.rs")]);
}

#[test]
fn super_super_is_read() {
    let found = breaches_in(&with(&[
        ("store/mod.rs", "pub mod outbox;\n"),
        ("store/outbox.rs", "use super::super::butler::wire;\n"),
    ]));
    assert_eq!(found, vec![pair("store/outbox.rs", "butler/wire.rs")]);
}

#[test]
fn an_import_after_a_cfg_test_string_is_read_and_test_items_are_not() {
    let found = breaches_in(&with(&[(
        "store/mod.rs",
        "// Tests live under #[cfg(test)] below.\n\
         const NOTE: &str = \"#[cfg(test)]\";\n\
         use crate::sync::walk;\n\
         #[cfg(test)]\n\
         mod tests { use crate::butler::wire; }\n\
         #[cfg(all(test, unix))]\n\
         fn helper() { crate::butler::wire::Post; }\n",
    )]));
    assert_eq!(found, vec![pair("store/mod.rs", "sync/walk.rs")]);
}

#[test]
fn a_path_in_a_doc_comment_is_no_import() {
    let found = breaches_in(&with(&[(
        "store/mod.rs",
        "//! Unlike [`crate::sync::walk`], the store knows no sync.\n\
         /// Posted later as a [`crate::butler::wire::Post`].\n\
         pub struct Row;\n",
    )]));
    assert_eq!(found, Vec::<(String, String)>::new());
}

#[test]
fn renames_globs_self_and_paths_in_code_are_read() {
    let graph = synthetic(&with(&[
        ("store/mod.rs", "pub mod a;\npub mod b;\npub mod c;\npub mod d;\n"),
        ("store/a.rs", "use crate::butler::{self as sink};\nfn f() { sink::wire::Post; }\n"),
        ("store/b.rs", "use crate::sync::*;\n"),
        ("store/c.rs", "fn f() -> crate::item::Kind { tracing::info!(\"{:?}\", crate::butler::wire::Post); todo!() }\n"),
        ("store/d.rs", "use self::inner::X;\nmod inner { pub use super::super::a; pub struct X; }\n"),
    ]));
    let of = |f: &str| graph.edges[f].iter().cloned().collect::<Vec<_>>();
    assert_eq!(of("store/a.rs"), ["butler/mod.rs", "butler/wire.rs"]);
    assert_eq!(of("store/b.rs"), ["sync/mod.rs"]);
    assert_eq!(of("store/c.rs"), ["butler/wire.rs", "item.rs"]);
    assert_eq!(of("store/d.rs"), ["store/a.rs"]);
}

#[test]
fn a_child_module_reached_by_its_bare_name_and_a_cycle_are_found() {
    let graph = synthetic(&with(&[
        (
            "store/mod.rs",
            "mod outbox;\nfn f() { outbox::Row; }\npub struct Store;\n",
        ),
        (
            "store/outbox.rs",
            "pub struct Row;\nfn f() -> super::Store { todo!() }\n",
        ),
    ]));
    assert_eq!(
        graph.cycle(),
        Some(vec![
            "store/mod.rs".to_string(),
            "store/outbox.rs".to_string(),
            "store/mod.rs".to_string()
        ])
    );
}

#[test]
fn a_file_declared_under_cfg_test_is_test_code() {
    let found = breaches_in(&with(&[
        ("store/mod.rs", "#[cfg(test)]\nmod tests;\n"),
        ("store/tests.rs", "use crate::butler::wire;\n"),
    ]));
    assert_eq!(found, Vec::<(String, String)>::new());
}

#[test]
fn only_and_not_rules_hold_whatever_the_files() {
    // `config` split into a folder, the metrics server moved under a `metrics` room.
    let found = breaches_in(&with(&[
        ("config/mod.rs", "pub mod secrets;\n"),
        ("config/secrets.rs", "pub struct Token;\n"),
        (
            "buildkite/client.rs",
            "use crate::config::secrets::Token;\nuse crate::item::Kind;\n",
        ),
    ]));
    assert_eq!(found, vec![pair("buildkite/client.rs", "item.rs")]);
}
