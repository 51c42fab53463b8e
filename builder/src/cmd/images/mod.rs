//! The local-image commands: `kiln images`, `tag`, `rmi` here; `push`, `pull` and
//! `inspect` in `remote.rs`; `save` and `load` in `archive.rs`. Images are the
//! named entries of the content store (`kiln_cache::images`).

mod archive;
mod attestations;
mod remote;

use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use kiln_cache::images::LocalImage;
use kiln_cache::reference::Reference;
use kiln_cache::store::ContentStore;
use kiln_oci::Digest;
use serde_json::json;

use crate::cli::images::{ImageCommand, ListArgs, RmiArgs, TagArgs};
use crate::export::{load_built, Built};

pub fn run(command: ImageCommand) -> ExitCode {
    super::init_tracing(None);
    let r = match command {
        ImageCommand::Images(a) => list(&a),
        ImageCommand::Tag(a) => tag(&a),
        ImageCommand::Rmi(a) => rmi(&a),
        ImageCommand::Push(a) => remote::push(a),
        ImageCommand::Pull(a) => remote::pull(a),
        ImageCommand::Inspect(a) => remote::inspect(a),
        ImageCommand::Save(a) => archive::save(&a),
        ImageCommand::Load(a) => archive::load(&a),
        ImageCommand::Sbom(a) => attestations::sbom(a),
        ImageCommand::Attestations(a) => attestations::list(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}

fn open_store() -> Result<ContentStore> {
    let dir = crate::options::state_dir()?.join("content");
    ContentStore::open(&dir).with_context(|| format!("opening the content store {}", dir.display()))
}

/// `docker.io/library/app:1` as docker shows it: `app:1`.
pub(super) fn familiar(r: &Reference) -> String {
    let s = r.to_string();
    s.strip_prefix("docker.io/library/").or_else(|| s.strip_prefix("docker.io/")).map(str::to_string).unwrap_or(s)
}

/// An image ID as typed: `sha256:` and/or at least 4 hex digits.
fn id_prefix(arg: &str) -> Option<&str> {
    let hex = arg.strip_prefix("sha256:").unwrap_or(arg);
    (hex.len() >= 4 && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some(hex)
}

/// The named images `arg` stands for: every name of an image ID, or the one image
/// of a name. Not local: an error naming `arg`, a close name, and what there is.
pub(super) fn resolve(store: &ContentStore, arg: &str) -> Result<Vec<LocalImage>> {
    let images = store.images()?;
    if let Some(hex) = id_prefix(arg) {
        let by_id: Vec<LocalImage> = images.iter().filter(|i| i.digest().is_ok_and(|d| d.hex().starts_with(hex))).cloned().collect();
        let distinct: std::collections::BTreeSet<String> = by_id.iter().filter_map(|i| i.digest().ok()).map(|d| d.to_string()).collect();
        if distinct.len() > 1 {
            bail!("image ID {arg} is ambiguous: it starts {} images", distinct.len());
        }
        if !by_id.is_empty() {
            return Ok(by_id);
        }
    }
    let r: Reference = arg.parse().map_err(|e| anyhow!("{e}"))?;
    if let Some(i) = kiln_cache::images::find_in(&images, &r) {
        return Ok(vec![i.clone()]);
    }
    Err(not_local(arg, &images))
}

pub(super) fn not_local(arg: &str, images: &[LocalImage]) -> anyhow::Error {
    let names: Vec<String> = images.iter().map(|i| familiar(&i.name)).collect();
    let hint = kiln_frontend::suggest::did_you_mean(kiln_frontend::suggest::search(arg, names.iter().map(String::as_str), true).as_deref());
    let have = match names.len() {
        0 => "there are no local images".to_string(),
        _ => format!("`kiln images` lists {}", names.join(", ")),
    };
    anyhow!("no local image {arg:?}{hint}; {have}")
}

/// One image resolved to a single image (several names of one ID are one image).
pub(super) fn resolve_one(store: &ContentStore, arg: &str) -> Result<LocalImage> {
    resolve(store, arg)?.into_iter().next().ok_or_else(|| anyhow!("no local image {arg:?}"))
}

/// What `kiln images` shows of one image.
struct Row {
    name: Reference,
    digest: Digest,
    platforms: Vec<String>,
    size: u64,
    created: Option<String>,
}

fn row(store: &ContentStore, img: &LocalImage) -> Result<Row> {
    let built: Built = load_built(store, &img.descriptor).with_context(|| format!("reading the image {}", img.name))?;
    let mut blobs = std::collections::BTreeMap::new();
    blobs.insert(img.digest()?.to_string(), built.top_bytes.len() as u64);
    let mut created = None;
    for (_, m) in &built.manifests {
        blobs.insert(m.digest.to_string(), m.bytes.len() as u64);
        for b in &m.blobs {
            blobs.insert(b.digest().to_string(), b.size());
        }
        if created.is_none() {
            let config_digest: Digest = m.blobs[0].digest().to_string().parse()?;
            let config = kiln_oci::ImageConfig::from_bytes(&store.read(&config_digest)?).map_err(|e| anyhow!("config {config_digest}: {e}"))?;
            created = config.created.clone();
        }
    }
    Ok(Row {
        name: img.name.clone(),
        digest: img.digest()?,
        platforms: built.manifests.iter().map(|(p, _)| p.to_string()).collect(),
        size: blobs.values().sum(),
        created,
    })
}

fn list(a: &ListArgs) -> Result<()> {
    let store = open_store()?;
    let filter = a.filter.as_deref();
    let mut rows = Vec::new();
    for img in store.images()? {
        if let Some(f) = filter {
            let full = img.name.to_string();
            let short = familiar(&img.name);
            let repo_only = |s: &str| s.rsplit_once(':').map(|(r, _)| r.to_string()).unwrap_or_else(|| s.to_string());
            let wanted = f == full || f == short || f == repo_only(&full) || f == repo_only(&short);
            if !wanted {
                continue;
            }
        }
        rows.push(row(&store, &img)?);
    }
    let id = |d: &Digest| if a.no_trunc { d.to_string() } else { d.hex()[..12].to_string() };
    if a.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for r in &rows {
            if seen.insert(r.digest.to_string()) {
                println!("{}", id(&r.digest));
            }
        }
        return Ok(());
    }
    match a.format.as_str() {
        "json" => {
            let out: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    json!({
                        "name": r.name.to_string(),
                        "repository": familiar(&r.name).rsplit_once(':').map(|(x, _)| x.to_string()),
                        "tag": r.name.tag(),
                        "digest": r.digest.to_string(),
                        "platforms": r.platforms,
                        "size": r.size,
                        "created": r.created,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        "table" => {
            println!("{:<40} {:<16} {:<14} {:<28} {:>10}  CREATED", "REPOSITORY", "TAG", "DIGEST", "PLATFORMS", "SIZE");
            for r in &rows {
                let short = familiar(&r.name);
                let (repo, tag) = short.rsplit_once(':').unwrap_or((&short, "latest"));
                println!(
                    "{:<40} {:<16} {:<14} {:<28} {:>10}  {}",
                    repo,
                    tag,
                    id(&r.digest),
                    r.platforms.join(","),
                    human(r.size),
                    r.created.as_deref().unwrap_or("-")
                );
            }
        }
        other => bail!("--format {other:?}: expected table or json"),
    }
    Ok(())
}

fn human(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 { format!("{b}B") } else { format!("{v:.1}{}", UNITS[u]) }
}

fn tag(a: &TagArgs) -> Result<()> {
    let store = open_store()?;
    let src = resolve_one(&store, &a.source)?;
    let dst: Reference = a.target.parse().map_err(|e| anyhow!("{e}"))?;
    if dst.digest().is_some() {
        bail!("{}: a name cannot hold a digest", a.target);
    }
    store.name_image(&dst, &src.descriptor)?;
    Ok(())
}

fn rmi(a: &RmiArgs) -> Result<()> {
    let store = open_store()?;
    let mut failed = Vec::new();
    for arg in &a.images {
        match resolve(&store, arg) {
            Ok(images) => {
                for i in images {
                    store.remove_image(&i.name)?;
                    println!("Untagged: {}", familiar(&i.name));
                }
            }
            Err(e) if a.force => tracing::debug!("rmi -f: {e}"),
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    Ok(())
}
