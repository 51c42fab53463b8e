//! End to end: the layers of a base are unpacked side by side (issue 18 part 1,
//! `kiln_snapshotter::side_by_side`), and a RUN on it sees the tree unpacking them in
//! order gives (`KILN_SIDE_BY_SIDE=0`): the RUN writes a listing of every path of the
//! base's layers with mode, owner, size and mtime, so the two images are the same only
//! if the two rootfs are.

use kiln_integration::{seed_base_images, Image, Registry, Sandbox};

#[test]
fn a_base_unpacked_side_by_side_is_the_base_unpacked_in_order() {
    let registry = Registry::start();
    let base = seed_base_images(&registry);
    // A base of five layers: files, a hard link, a replaced and a deleted file, a
    // directory made opaque, a symlink.
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

    let df = format!("FROM {base_ref}\nRUN find /opt /srv /bin -exec stat -c '%n %A %u %g %s %Y %h' {{}} + | sort > /listing\n");
    let build = |side_by_side: bool| {
        let sb = Sandbox::new();
        let ctx = sb.new_context("on-it").file("Dockerfile", &df).build();
        let out = sb.out_path("oci");
        let mut k = sb.kiln().build().env("SOURCE_DATE_EPOCH", "1700000000").env("KILN_LOG", "kiln_builder::solver::rootfs=debug").output_oci(&out);
        if !side_by_side {
            k = k.env("KILN_SIDE_BY_SIDE", "0");
        }
        let run = k.arg(&ctx).run();
        run.assert_success();
        (Image::from_layout(&out, None), run)
    };
    let (side, run) = build(true);
    let unpacked_alone = run.combined().lines().filter(|l| l.contains("layer unpacked side by side") && l.contains("alone=true")).count();
    assert_eq!(unpacked_alone, 5, "every layer of the base unpacked on its own\n{run}");
    let (ordered, run) = build(false);
    assert!(!run.combined().contains("side by side"), "{run}");
    let listing = side.tree.node("/listing").text();
    assert!(listing.contains("/opt/a/f-link -rw-r----- 0 0 2 ") && listing.contains("/opt/a/deep/h") && !listing.contains("/opt/a/deep/g"), "{listing}");
    assert_eq!(side.manifest_digest, ordered.manifest_digest, "side by side:\n{listing}\nin order:\n{}", ordered.tree.node("/listing").text());
}
