//! End to end: the layers of a base are unpacked side by side (issue 18 part 1,
//! `kiln_snapshotter::side_by_side`), and a RUN on it sees the tree unpacking them in
//! order gives (`KILN_SIDE_BY_SIDE=0`): the RUN writes a listing of every path of the
//! base's layers with mode, owner, size and mtime, so the two images are the same only
//! if the two rootfs are.

use kiln_integration::faultproxy::{Fault, FaultProxy, Rule};
use kiln_integration::{seed_base_images, Image, Registry, Sandbox};

/// Push a base of five layers (files, a hard link, a replaced and a deleted file, a
/// directory made opaque, a symlink) as `test/five-layers:latest`; its reference.
fn push_five_layer_base(registry: &Registry) -> String {
    let base = seed_base_images(registry);
    let sb = Sandbox::new();
    let base_df = format!(
        "FROM {}\n\
         RUN mkdir -p /opt/a/deep && echo a > /opt/a/f && echo d > /opt/a/deep/g && chmod 640 /opt/a/f\n\
         RUN ln /opt/a/f /opt/a/f-link && ln -s a /opt/b && echo b > /opt/b-file\n\
         RUN echo replaced > /opt/a/deep/g && rm /opt/b-file && mkdir -p /srv/x && touch -d @1600000000 /srv/x/t\n\
         RUN rm -rf /opt/a/deep && mkdir /opt/a/deep && echo new > /opt/a/deep/h\n",
        base.latest
    );
    let ctx = sb.new_context("multi-base").file("Dockerfile", &base_df).build();
    let base_ref = registry.reference("test/five-layers:latest");
    sb.kiln().build().env("SOURCE_DATE_EPOCH", "1700000000").arg("-t").arg(&base_ref).arg("--push").arg(&ctx).run().assert_success();
    base_ref
}

/// A RUN that lists every path of the base's layers with mode, owner, size, mtime
/// and link count.
fn listing_dockerfile(base_ref: &str) -> String {
    format!("FROM {base_ref}\nRUN find /opt /srv /bin -exec stat -c '%n %A %u %g %s %Y %h' {{}} + | sort > /listing\n")
}

/// Build `df` (with an `app` file in the context) to an OCI layout in a fresh sandbox,
/// side by side or in order (`KILN_SIDE_BY_SIDE=0`), with the rootfs debug lines;
/// the image, the run, and how many unpacked layers the state holds.
fn build_on_base(df: &str, side_by_side: bool) -> (Image, kiln_integration::RunOutput, usize) {
    let sb = Sandbox::new();
    let ctx = sb.new_context("on-it").file("Dockerfile", df).file("app", "app\n").build();
    let out = sb.out_path("oci");
    let mut k = sb.kiln().build().env("SOURCE_DATE_EPOCH", "1700000000").env("KILN_LOG", "kiln_builder::solver::rootfs=debug,kiln_builder::solver::lazy=debug").output_oci(&out);
    if !side_by_side {
        k = k.env("KILN_SIDE_BY_SIDE", "0");
    }
    let run = k.arg(&ctx).run();
    run.assert_success();
    let layers = std::fs::read_dir(sb.kiln_root().join("snapshots/layers")).map(|d| d.count()).unwrap_or(0);
    (Image::from_layout(&out, None), run, layers)
}

#[test]
fn a_base_unpacked_side_by_side_is_the_base_unpacked_in_order() {
    let registry = Registry::start();
    let base_ref = push_five_layer_base(&registry);
    let df = listing_dockerfile(&base_ref);
    let (side, run, _) = build_on_base(&df, true);
    let unpacked_alone = run.combined().lines().filter(|l| l.contains("layer unpacked side by side") && l.contains("alone=true")).count();
    assert_eq!(unpacked_alone, 5, "every layer of the base unpacked on its own\n{run}");
    // ...each as it downloaded (issue 18 part 1), not after.
    assert_eq!(run.combined().matches("layer read as it downloaded").count(), 5, "{run}");
    let (ordered, run, _) = build_on_base(&df, false);
    assert!(!run.combined().contains("side by side"), "{run}");
    let listing = side.tree.node("/listing").text();
    assert!(listing.contains("/opt/a/f-link -rw-r----- 0 0 2 ") && listing.contains("/opt/a/deep/h") && !listing.contains("/opt/a/deep/g"), "{listing}");
    assert_eq!(side.manifest_digest, ordered.manifest_digest, "side by side:\n{listing}\nin order:\n{}", ordered.tree.node("/listing").text());
}

/// A base layer cut off mid-stream, or with a flipped byte, while the layers unpack
/// side by side: the build fails naming the registry, and keeps nothing a later
/// build trusts: the next build on the same state (the registry honest again) makes
/// the image a fresh state makes.
#[test]
fn a_layer_cut_or_corrupted_while_unpacking_side_by_side_leaves_nothing_trusted() {
    let registry = Registry::start();
    let base_ref = push_five_layer_base(&registry);
    let layers: Vec<String> = registry.manifest("test/five-layers", "latest")["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    let sb = Sandbox::new();
    for (n, fault) in [Fault::DropResponseAfter(700), Fault::CorruptResponseBody(300)].into_iter().enumerate() {
        let proxy = FaultProxy::start(&registry.host());
        // The busybox layer (the biggest), and the top one.
        for l in [&layers[0], &layers[4]] {
            proxy.add_rule(Rule::new("GET", &format!("/blobs/{l}"), fault.clone(), 100));
        }
        let through = base_ref.replacen(&registry.host(), &proxy.host(), 1);
        let ctx = sb.new_context(&format!("faulty-{n}")).file("Dockerfile", listing_dockerfile(&through)).build();
        let out = sb.kiln().build().arg(&ctx).run();
        out.assert_failure_containing(&proxy.host());
        assert!(!out.stderr.contains("panicked"), "{fault:?}\n{out}");
        assert!(proxy.injected() > 0, "{fault:?}: {:?}", proxy.log());
        // The same faults under a COPY-only stage: the layers are read for their
        // skeletons as they download and not stored; the bad bytes are not trusted.
        let before = proxy.injected();
        let ctx = sb.new_context(&format!("faulty-copy-{n}")).file("Dockerfile", format!("FROM {through}\nCOPY app /srv/app\n")).file("app", "app\n").build();
        let out = sb.kiln().build().tag(&format!("{}/test/faulty-copy:{n}", proxy.host())).push().arg(&ctx).run();
        out.assert_failure_containing(&proxy.host());
        assert!(!out.stderr.contains("panicked"), "{fault:?}\n{out}");
        assert!(proxy.injected() > before, "{fault:?}: {:?}", proxy.log());
    }
    let oci = |sb: &Sandbox, name: &str| {
        let ctx = sb.new_context(name).file("Dockerfile", listing_dockerfile(&base_ref)).build();
        let out = sb.out_path(name);
        sb.kiln().build().env("SOURCE_DATE_EPOCH", "1700000000").output_oci(&out).arg(&ctx).run().assert_success();
        Image::from_layout(&out, None).manifest_digest
    };
    let after = oci(&sb, "after-faults");
    assert_eq!(after, oci(&Sandbox::new(), "fresh"), "the state the faulty builds left gave another image");
    let copy_only = |sb: &Sandbox, tag: &str| {
        let ctx = sb.new_context(tag).file("Dockerfile", format!("FROM {base_ref}\nCOPY app /srv/app\n")).file("app", "app\n").build();
        let r = registry.reference(&format!("test/copy-after:{tag}"));
        sb.kiln().build().env("SOURCE_DATE_EPOCH", "1700000000").tag(&r).push().arg(&ctx).run().assert_success();
        registry.manifest("test/copy-after", tag).to_string()
    };
    assert_eq!(copy_only(&sb, "faulted"), copy_only(&Sandbox::new(), "fresh"), "the skeletons the faulty builds left gave another image");
}

/// A COPY-only stage on the five-layer base: the skeletons are made side by side, no
/// layer is unpacked, and the image is the one the ordered way makes.
#[test]
fn skeletons_side_by_side_give_the_ordered_image() {
    let registry = Registry::start();
    let base_ref = push_five_layer_base(&registry);
    let df = format!("FROM {base_ref}\nCOPY app /opt/a/deep/app\nCOPY app /srv/x/app\n");
    let (side, run, unpacked) = build_on_base(&df, true);
    let alone = run.combined().lines().filter(|l| l.contains("layer skeleton made") && l.contains("alone=true")).count();
    assert_eq!(alone, 5, "{run}");
    let (ordered, run_ordered, unpacked_ordered) = build_on_base(&df, false);
    assert!(!run_ordered.combined().contains("alone=true"), "{run_ordered}");
    // The two COPY layers are the only snapshots: the base stayed packed both ways.
    assert_eq!((unpacked, unpacked_ordered), (2, 2), "{run}");
    side.tree.assert_file("/srv/x/app", 0o644, 0, 0, "app\n");
    assert_eq!(side.manifest_digest, ordered.manifest_digest);
}
