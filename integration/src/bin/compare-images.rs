//! `compare-images [--ignore-path P]... [--ignore-xattr PREFIX]... [--ignore-label K]... A B`
//!
//! Compares two images in registries (references read with skopeo, plain HTTP
//! allowed) with `kiln_integration::compare`: prints every difference; exit 0
//! when the same, 1 when different, 2 on a usage error. Used by
//! `testdata/conformance.sh`.

use kiln_integration::compare::{compare_images, CompareOptions};
use kiln_integration::Image;

fn main() {
    let mut opts = CompareOptions::default();
    let mut refs = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next().unwrap_or_else(|| {
                eprintln!("compare-images: {name} needs a value");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--ignore-path" => opts.ignore_paths.push(value("--ignore-path")),
            "--ignore-xattr" => opts.ignore_xattr_prefixes.push(value("--ignore-xattr")),
            "--ignore-label" => opts.ignore_labels.push(value("--ignore-label")),
            s if s.starts_with('-') => {
                eprintln!("compare-images: unknown option {s}");
                std::process::exit(2)
            }
            _ => refs.push(a),
        }
    }
    let [a, b] = refs.as_slice() else {
        eprintln!("usage: compare-images [--ignore-path P] [--ignore-xattr PREFIX] [--ignore-label K] A B");
        std::process::exit(2)
    };
    let diffs = compare_images(&Image::pull(a), &Image::pull(b), &opts);
    for d in &diffs {
        println!("{d}");
    }
    std::process::exit(if diffs.is_empty() { 0 } else { 1 })
}
