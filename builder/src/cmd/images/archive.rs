//! `kiln save` and `kiln load`: local images to and from archives — the OCI layout
//! tars kiln and Docker ≥ 25 write (with or without `manifest.json`), and the
//! older `docker save` format (`manifest.json` with `<id>/layer.tar` files).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use kiln_cache::reference::Reference;
use kiln_cache::store::ContentStore;
use kiln_oci::{media, Descriptor, Digest, ImageIndex};
use serde_json::{json, Value};

use super::{familiar, open_store, resolve};
use crate::cli::images::{LoadArgs, SaveArgs};
use crate::export::archive::{write_archive_file, ArchiveKind};
use crate::export::{descriptor, load_built, Built};

/// Largest JSON member of an archive read into memory.
const MAX_JSON: u64 = 16 << 20;

pub(super) fn save(a: &SaveArgs) -> Result<()> {
    let kind = match a.format.as_str() {
        "docker-archive" | "docker" => ArchiveKind::Docker,
        "oci-archive" | "oci" => ArchiveKind::Oci,
        other => bail!("--format {other:?}: expected docker-archive or oci-archive"),
    };
    let store = open_store()?;
    // Names grouped by image, in the order asked.
    let mut order: Vec<String> = Vec::new();
    let mut by_digest: BTreeMap<String, (Descriptor, Vec<Reference>)> = BTreeMap::new();
    for arg in &a.images {
        for img in resolve(&store, arg)? {
            let d = img.digest()?.to_string();
            let e = by_digest.entry(d.clone()).or_insert_with(|| {
                order.push(d.clone());
                (img.descriptor.clone(), Vec::new())
            });
            if !e.1.contains(&img.name) {
                e.1.push(img.name.clone());
            }
        }
    }
    let mut built: Vec<(Built, Vec<Reference>)> = Vec::new();
    for d in &order {
        let (desc, names) = &by_digest[d];
        built.push((load_built(&store, desc)?, names.clone()));
    }
    let images: Vec<(&Built, Vec<Reference>)> = built.iter().map(|(b, n)| (b, n.clone())).collect();
    write_archive_file(&store, &a.output, &images, kind).with_context(|| format!("writing {}", a.output.display()))
}

/// What an archive held besides blobs.
#[derive(Default)]
struct Members {
    index: Option<Vec<u8>>,
    manifest: Option<Vec<u8>>,
    /// Legacy members (`<id>/layer.tar`, `<id>.json`): path → (digest, size), stored as blobs.
    files: BTreeMap<String, (Digest, u64)>,
}

fn read_members(store: &ContentStore, input: impl Read) -> Result<Members> {
    let mut m = Members::default();
    let mut tar = tar::Archive::new(input);
    for entry in tar.entries().context("reading the archive")? {
        let mut e = entry.context("reading the archive")?;
        if !e.header().entry_type().is_file() {
            continue;
        }
        let path = e.path()?.to_string_lossy().trim_start_matches("./").to_string();
        match path.as_str() {
            "index.json" | "manifest.json" => {
                let mut bytes = Vec::new();
                (&mut e).take(MAX_JSON + 1).read_to_end(&mut bytes)?;
                if bytes.len() as u64 > MAX_JSON {
                    bail!("{path} in the archive is larger than {MAX_JSON} bytes");
                }
                if path == "index.json" { m.index = Some(bytes) } else { m.manifest = Some(bytes) }
            }
            "oci-layout" | "repositories" => {}
            _ => {
                let expected = path.strip_prefix("blobs/sha256/").map(|h| format!("sha256:{h}").parse::<Digest>()).transpose().map_err(|e| anyhow!("{path}: {e}"))?;
                let mut w = store.writer()?;
                std::io::copy(&mut e, &mut w).with_context(|| format!("storing {path}"))?;
                let (d, size) = w.commit(expected.as_ref()).with_context(|| format!("storing {path}"))?;
                if expected.is_none() {
                    m.files.insert(path, (d, size));
                }
            }
        }
    }
    Ok(m)
}

/// Every blob `desc` reaches is in the store (an archive may be cut short).
fn check_complete(store: &ContentStore, desc: &Descriptor) -> Result<()> {
    let built = load_built(store, desc)?;
    for (_, m) in &built.manifests {
        for b in &m.blobs {
            let d: Digest = b.digest().to_string().parse()?;
            if !store.has(&d) {
                bail!("the archive lacks blob {d} of image {}", desc.digest());
            }
        }
    }
    Ok(())
}

/// The images of an OCI layout's `index.json`, with names from containerd's
/// annotation, else from `manifest.json`'s `RepoTags` for the same config.
fn images_of_layout(store: &ContentStore, index: &[u8], manifest: Option<&[u8]>) -> Result<Vec<(Descriptor, Vec<Reference>)>> {
    let index: ImageIndex = serde_json::from_slice(index).context("index.json of the archive")?;
    let repo_tags: BTreeMap<String, Vec<String>> = match manifest {
        Some(b) => serde_json::from_slice::<Vec<Value>>(b)
            .context("manifest.json of the archive")?
            .iter()
            .map(|e| {
                let config = e["Config"].as_str().unwrap_or_default().rsplit('/').next().unwrap_or_default().trim_end_matches(".json").to_string();
                let tags = e["RepoTags"].as_array().map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect()).unwrap_or_default();
                (config, tags)
            })
            .collect(),
        None => BTreeMap::new(),
    };
    let mut out = Vec::new();
    for d in index.manifests() {
        let mut names = Vec::new();
        if let Some(n) = d.annotations().as_ref().and_then(|a| a.get("io.containerd.image.name")) {
            names.push(n.parse::<Reference>().map_err(|e| anyhow!("{e}"))?);
        } else {
            // A single-platform manifest: its config names it in manifest.json.
            let dg: Digest = d.digest().to_string().parse()?;
            if let Ok(m) = serde_json::from_slice::<Value>(&store.read(&dg)?) {
                let cfg = m["config"]["digest"].as_str().unwrap_or_default().trim_start_matches("sha256:").to_string();
                for t in repo_tags.get(&cfg).into_iter().flatten() {
                    names.push(t.parse::<Reference>().map_err(|e| anyhow!("{e}"))?);
                }
            }
        }
        let mut desc = d.clone();
        desc.set_annotations(None);
        out.push((desc, names));
    }
    Ok(out)
}

/// The images of a legacy `docker save` archive: an OCI manifest made for each
/// `manifest.json` entry over the config and layer files it names.
fn images_of_legacy(store: &ContentStore, manifest: &[u8], files: &BTreeMap<String, (Digest, u64)>) -> Result<Vec<(Descriptor, Vec<Reference>)>> {
    let entries: Vec<Value> = serde_json::from_slice(manifest).context("manifest.json of the archive")?;
    let file = |p: &str| files.get(p.trim_start_matches("./")).ok_or_else(|| anyhow!("manifest.json names {p}, which the archive lacks"));
    let mut out = Vec::new();
    for e in &entries {
        let (cd, cs) = file(e["Config"].as_str().unwrap_or_default())?;
        let mut layers = Vec::new();
        for l in e["Layers"].as_array().into_iter().flatten() {
            let (ld, ls) = file(l.as_str().unwrap_or_default())?;
            let mut head = [0u8; 2];
            let gz = store.open_blob(ld)?.read_exact(&mut head).is_ok() && head == [0x1f, 0x8b];
            let mt = if gz { media::OCI_LAYER_GZIP } else { media::OCI_LAYER_TAR };
            layers.push(json!({"mediaType": mt, "digest": ld.to_string(), "size": ls}));
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": cd.to_string(), "size": cs},
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest)?;
        let digest = store.put(&bytes)?;
        let names = e["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
            .map(|t| t.parse::<Reference>().map_err(|e| anyhow!("{e}")))
            .collect::<Result<Vec<_>>>()?;
        out.push((descriptor(media::OCI_MANIFEST, &digest, bytes.len() as u64)?, names));
    }
    Ok(out)
}

pub(super) fn load(a: &LoadArgs) -> Result<()> {
    let store = open_store()?;
    let input: PathBuf = a.input.clone().unwrap_or_else(|| PathBuf::from("-"));
    let members = if input.as_os_str() == "-" {
        read_members(&store, std::io::stdin().lock())?
    } else {
        let f = std::fs::File::open(&input).with_context(|| format!("opening {}", input.display()))?;
        let mut head = [0u8; 6];
        let n = (&f).take(6).read(&mut head).with_context(|| format!("reading {}", input.display()))?;
        let f = std::fs::File::open(&input).with_context(|| format!("opening {}", input.display()))?;
        let r = crate::steps::archive::decompress(std::io::BufReader::new(f), crate::steps::archive::detect(&head[..n]))
            .with_context(|| format!("decompressing {}", input.display()))?;
        read_members(&store, r).with_context(|| format!("loading {}", input.display()))?
    };
    let images = match (&members.index, &members.manifest) {
        (Some(index), manifest) => images_of_layout(&store, index, manifest.as_deref())?,
        (None, Some(manifest)) => images_of_legacy(&store, manifest, &members.files)?,
        (None, None) => bail!("{}: not an image archive (neither index.json nor manifest.json)", input.display()),
    };
    for (desc, names) in &images {
        check_complete(&store, desc)?;
        if names.is_empty() {
            // Unnamed: kept under its digest so it survives a prune and can be tagged.
            let r: Reference = format!("loaded:sha256-{}", &desc.digest().to_string().trim_start_matches("sha256:")[..12]).parse().map_err(|e| anyhow!("{e}"))?;
            store.name_image(&r, desc)?;
            println!("Loaded image ID: {}", desc.digest());
        }
        for n in names {
            store.name_image(n, desc)?;
            if a.quiet {
                println!("{}", familiar(n));
            } else {
                println!("Loaded image: {}", familiar(n));
            }
        }
    }
    Ok(())
}
