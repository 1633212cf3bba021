//! The layering of ARCHITECTURE.md, checked: every `crate::…` and `super::…`
//! path in the crate's code points to a file of the same layer or below.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layer of each source file (ARCHITECTURE.md).
fn layers() -> BTreeMap<&'static str, u8> {
    let table: &[(u8, &[&str])] = &[
        (
            1,
            &[
                "clock.rs",
                "sync.rs",
                "chunked.rs",
                "live.rs",
                "sigaction.rs",
                "stderr.rs",
            ],
        ),
        (
            2,
            &[
                "task.rs",
                "panics.rs",
                "error.rs",
                "cancel/reason.rs",
                "cancel/listeners.rs",
                "cancel/tree.rs",
            ],
        ),
        (3, &["context.rs"]),
        (
            4,
            &[
                "cancel/mod.rs",
                "cancel/scope.rs",
                "cancel/handle.rs",
                "cancel/scope_wait.rs",
                "cancel/foreign.rs",
                "checkpoint.rs",
                "time.rs",
                "spawn.rs",
            ],
        ),
        (
            5,
            &[
                "nursery/mod.rs",
                "nursery/handle.rs",
                "nursery/shared.rs",
                "nursery/future.rs",
                "nursery/children.rs",
                "nursery/start.rs",
                "nursery/supervise.rs",
                "nursery/table.rs",
                "nursery/blocking.rs",
            ],
        ),
        (6, &["report.rs"]),
        (7, &["signal.rs"]),
        (8, &["run.rs", "testing.rs", "loom.rs", "lib.rs"]),
    ];
    table
        .iter()
        .flat_map(|(layer, files)| files.iter().map(move |file| (*file, *layer)))
        .collect()
}

/// The file a module path (`cancel::tree`, `nursery`) is written in.
fn file_of(src: &Path, module: &[&str]) -> Option<String> {
    // The longest prefix of the path that names a file.
    for len in (1..=module.len()).rev() {
        let joined = module[..len].join("/");
        for candidate in [format!("{joined}.rs"), format!("{joined}/mod.rs")] {
            if src.join(&candidate).exists() {
                return Some(candidate);
            }
        }
    }
    None
}

/// The module path of a file (`cancel/tree.rs` → `cancel::tree`).
fn module_of(file: &str) -> Vec<String> {
    let trimmed = file.trim_end_matches(".rs").trim_end_matches("/mod");
    if trimmed == "lib" {
        return Vec::new();
    }
    trimmed.split('/').map(String::from).collect()
}

/// The module paths a line of code reaches into, absolute from the crate root.
fn paths(line: &str, here: &[String]) -> Vec<Vec<String>> {
    let code = line.split("//").next().unwrap_or("");
    let mut found = Vec::new();
    for (start, _) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        let rest = &code[start..];
        let words: Vec<&str> = rest
            .split("::")
            .map(|word| {
                word.split(|c: char| !c.is_alphanumeric() && c != '_')
                    .next()
                    .unwrap_or("")
            })
            .take_while(|word| !word.is_empty())
            .collect();
        let Some((&head, tail)) = words.split_first() else {
            continue;
        };
        let mut path: Vec<String> = match head {
            "crate" => Vec::new(),
            // In an inline module (an indented line: `mod tests { use
            // super::*; }`), `super` is the file's own module.
            "super" if line.starts_with(char::is_whitespace) => here.to_vec(),
            // `super` from `a/b.rs` is `a`; from `a/mod.rs` it is the root.
            "super" => here[..here.len().saturating_sub(1)].to_vec(),
            _ => continue,
        };
        // Lowercase words are modules; the first other word ends the path.
        path.extend(
            tail.iter()
                .take_while(|word| word.starts_with(|c: char| c.is_ascii_lowercase()))
                .map(|word| word.to_string()),
        );
        found.push(path);
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_file_imports_only_from_its_layer_or_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layers = layers();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for path in files {
        let file = path
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let Some(&layer) = layers.get(file.as_str()) else {
            violations.push(format!(
                "{file} has no layer in ARCHITECTURE.md and tests/layers.rs"
            ));
            continue;
        };
        let here = module_of(&file);
        let text = std::fs::read_to_string(&path).unwrap();
        for (number, line) in text.lines().enumerate() {
            // A file's unit tests (its last item) may use the test tools of
            // any layer.
            if line.starts_with("mod tests") {
                break;
            }
            if line.trim_start().starts_with("//") {
                continue;
            }
            for module in paths(line, &here) {
                let words: Vec<&str> = module.iter().map(String::as_str).collect();
                let Some(target) = file_of(&src, &words) else {
                    continue; // an item of lib.rs (a re-export): checked there
                };
                let target_layer = layers[target.as_str()];
                if target != file && target_layer > layer {
                    violations.push(format!(
                        "src/{file}:{} (layer {layer}) reaches up to src/{target} (layer {target_layer}): {}",
                        number + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(violations.is_empty(), "\n{}", violations.join("\n"));
}

#[test]
fn the_checker_sees_an_upward_import() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let here = module_of("cancel/tree.rs");
    let found = paths("use crate::nursery::table::TaskTable;", &here);
    let words: Vec<&str> = found[0].iter().map(String::as_str).collect();
    assert_eq!(file_of(&src, &words).as_deref(), Some("nursery/table.rs"));
    let found = paths("use super::reason::CancelReason;", &here);
    let words: Vec<&str> = found[0].iter().map(String::as_str).collect();
    assert_eq!(file_of(&src, &words).as_deref(), Some("cancel/reason.rs"));
}
