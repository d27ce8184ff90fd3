//! House rules that clippy cannot check, as tests over the workspace's source.
//!
//! `/proc` is host state: product code reads it only through `hearth_actors::host` (its
//! `procfs` module and the process backend). clippy's `disallowed-methods` cannot match a path
//! string, so this test looks for `/proc` string literals instead.

use std::path::{Path, PathBuf};

/// Product source directories, relative to the workspace root. Not `agent/`: the guest agent
/// runs inside the guest and reads the guest's own `/proc`.
const PRODUCT: [&str; 4] = ["src", "actors/src", "proto/src", "sim/src"];

/// Where `/proc` may be read, and why.
const ALLOWED: [(&str, &str); 2] = [
    (
        "actors/src/host/",
        "the host backends own every read of host state",
    ),
    (
        "src/vm_host.rs",
        "test support (feature testing): finds the simulator processes it started",
    ),
];

/// The `.rs` files under `dir`, recursively.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The lines of `text` before its unit tests (`#[cfg(test)]` at the start of a line: unit
/// tests sit at the bottom of a file, or in their own `tests.rs`) that hold a string literal
/// starting with `/proc`, comments skipped.
fn proc_literals(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .take_while(|(_, line)| !line.starts_with("#[cfg(test)]"))
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .filter(|(_, line)| line.contains("\"/proc"))
        .map(|(i, line)| (i + 1, line.trim().to_owned()))
        .collect()
}

#[test]
fn proc_is_read_only_behind_the_host_backends() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in PRODUCT {
        sources(&root.join(dir), &mut files);
    }
    let mut offenders = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if ALLOWED.iter().any(|(prefix, _)| rel.starts_with(prefix)) || rel.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, code) in proc_literals(&text) {
            offenders.push(format!("{rel}:{line}: {code}"));
        }
    }
    assert!(
        offenders.is_empty(),
        "/proc read outside actors/src/host/ (use hearth_actors::host::procfs):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_scan_finds_a_proc_literal_and_skips_comments_and_unit_tests() {
    let text = "// \"/proc/x\" in a comment\nlet a = read(\"/proc/net/route\");\n\
                #[cfg(test)]\nmod tests { fn t() { read(\"/proc/self\"); } }\n";
    assert_eq!(
        proc_literals(text),
        vec![(2, "let a = read(\"/proc/net/route\");".to_owned())]
    );
}
