//! A hostile registry end to end (issue 19): `kiln build` as the unprivileged user
//! against the fault proxy in front of the real registry, serving a base image's
//! manifest without end, with a lying digest, or its layer without end. Each build
//! must fail naming the registry and what was wrong, with kiln's peak memory bounded
//! (it read 2.5 GB of an endless manifest before this was fixed), and never panic.

use kiln_integration::faultproxy::{Fault, FaultProxy, Rule};
use kiln_integration::registry::seed_base_images;
use kiln_integration::{Registry, Sandbox};

/// kiln's whole process tree may not hold more than this (VmHWM, `ru_maxrss`).
const MEMORY_BOUND_KIB: u64 = 256 << 10;

fn build_through(sb: &Sandbox, proxy: &FaultProxy, name: &str) -> kiln_integration::RunOutput {
    let df = format!("FROM {}/base/busybox:latest\nRUN true\n", proxy.host());
    let ctx = sb.new_context(name).file("Dockerfile", df).build();
    sb.kiln().build().arg("--push-retry").arg("0").arg(&ctx).run()
}

#[test]
fn a_hostile_registry_fails_the_build_with_bounded_memory() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let cases: Vec<(&str, &str, Fault, &str)> = vec![
        (
            "endless-manifest",
            "/manifests/",
            Fault::Endless { content_type: "application/vnd.oci.image.manifest.v1+json".into(), declared_length: None },
            "larger than 4 MiB",
        ),
        (
            "huge-declared-manifest",
            "/manifests/",
            Fault::Endless { content_type: "application/vnd.oci.image.index.v1+json".into(), declared_length: Some(3 << 30) },
            "3221225472 bytes announced",
        ),
        (
            "endless-layer",
            "/blobs/",
            Fault::Endless { content_type: "application/octet-stream".into(), declared_length: None },
            "bytes announced",
        ),
    ];
    for (name, path, fault, want) in cases {
        let proxy = FaultProxy::start(&registry.host());
        proxy.add_rule(Rule::new("GET", path, fault, 100));
        let out = build_through(&sb, &proxy, name);
        out.assert_failure_containing(want);
        out.assert_failure_containing(&format!("{}/base/busybox", proxy.host()));
        assert!(!out.stderr.contains("panicked"), "{name}: kiln panicked\n{out}");
        eprintln!("{name}: {} KiB at most", out.peak_rss_kib);
        assert!(out.peak_rss_kib < MEMORY_BOUND_KIB, "{name}: kiln grew to {} KiB\n{out}", out.peak_rss_kib);
        assert!(proxy.injected() > 0, "{name}: {:?}", proxy.log());
    }
    // The same base through a proxy that does nothing wrong builds: the cases failed
    // for their fault, not for the proxy.
    let proxy = FaultProxy::start(&registry.host());
    build_through(&sb, &proxy, "honest").assert_success();
}
