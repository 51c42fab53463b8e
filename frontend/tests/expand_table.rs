//! Word-expansion table: `tests/expand_cases.txt` (format described at its top).

use kiln_frontend::{expand_raw, expand_word};
use std::collections::BTreeMap;

fn field(s: &str) -> String {
    let t = s.trim();
    match t.strip_prefix("json:") {
        Some(j) => serde_json::from_str::<String>(j).unwrap_or_else(|e| panic!("bad json field {j}: {e}")),
        None => t.to_string(),
    }
}

#[test]
fn expansion_table() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/expand_cases.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut escape = '\\';
    let mut raw = false;
    let mut count = 0;
    let mut failures = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let lineno = n + 1;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("@env") {
            env.clear();
            for kv in rest.split_whitespace() {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                env.insert(k.to_string(), v.to_string());
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("@set ") {
            let (k, v) = rest.split_once('=').expect("@set K=V");
            env.insert(k.trim().to_string(), field(v));
            continue;
        }
        if let Some(rest) = line.strip_prefix("@escape ") {
            escape = rest.trim().chars().next().expect("@escape X");
            continue;
        }
        if let Some(rest) = line.strip_prefix("@mode ") {
            raw = rest.trim() == "raw";
            continue;
        }
        let (input, expected) = line.split_once(" | ").unwrap_or_else(|| panic!("line {lineno}: no ` | `"));
        let (input, expected) = (field(input), field(expected));
        let lookup = |k: &str| env.get(k).cloned();
        let got = if raw { expand_raw(&input, escape, &lookup) } else { expand_word(&input, escape, &lookup) };
        count += 1;
        let ok = match (&got, expected.strip_prefix("error")) {
            (Err(e), Some(rest)) => rest.is_empty() || e.contains(rest.trim_start_matches(':').trim()),
            (Ok(v), None) => *v == expected,
            (Ok(v), Some(_)) if expected.starts_with("error") => v == &expected,
            _ => false,
        };
        if !ok {
            failures.push(format!("line {lineno}: {input:?} → {got:?}, want {expected:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {count} expansion cases failed:\n{}", failures.len(), failures.join("\n"));
    assert!(count >= 150, "only {count} expansion cases");
    eprintln!("{count} expansion cases");
}
