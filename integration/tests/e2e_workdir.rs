//! End-to-end: WORKDIR creates its directory even when no later step uses it, as
//! BuildKit does — with a layer of its own, an empty one when the directory exists
//! (dockerfile2llb dispatchWorkdir).

use kiln_integration::{seed_base_images, Image, Kind, Registry, Sandbox};

#[test]
fn last_workdir_is_created_once() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let base = registry.reference("base/busybox:latest");
    let base_layers = Image::pull_from(&registry, "base/busybox:latest").layers.len();

    let ctx = sb.new_context("wd").file("Dockerfile", format!("FROM {base}\nWORKDIR /srv/data\nCMD [\"sh\"]\n")).build();
    let (l1, l2) = (sb.out_path("l1"), sb.out_path("l2"));
    sb.kiln().build().output_oci(&l1).arg(&ctx).run().assert_success();
    let img = Image::from_layout(&l1, None);
    img.assert_consistent();
    img.tree.assert_entry("/srv/data", Kind::Dir, 0o755, 0, 0);
    assert_eq!(img.layers.len(), base_layers + 1);
    assert_eq!(img.cfg()["WorkingDir"], "/srv/data");
    // Served from the cache the second time: same image.
    let out = sb.kiln().build().output_oci(&l2).arg(&ctx).run();
    out.assert_success();
    assert_eq!(Image::from_layout(&l2, None).manifest, img.manifest, "{out}");

    let ctx = sb.new_context("wd2").file("Dockerfile", format!("FROM {base}\nWORKDIR /tmp\n")).build();
    let l3 = sb.out_path("l3");
    sb.kiln().build().output_oci(&l3).arg(&ctx).run().assert_success();
    let img3 = Image::from_layout(&l3, None);
    assert_eq!(img3.layers.len(), base_layers + 1, "an existing WORKDIR adds an empty layer");
    assert!(img3.layers.last().unwrap().entries.is_empty(), "{:?}", img3.layers.last().unwrap().entries);
}
