//! `wordcount`: `wc` with JSON output, the shape of many small CLI tools.
use std::io::Read;

fn main() {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("wordcount: reading stdin: {e}");
        std::process::exit(1);
    }
    let report = serde_json::json!({
        "lines": input.lines().count(),
        "words": input.split_whitespace().count(),
        "bytes": input.len(),
        "tool": concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION")),
    });
    println!("{report}");
}
