//! Before any step runs: the `# syntax` check, pulling base images (with the
//! Dockerfile line of a failed pull), which images and platforms each stage needs,
//! stage fingerprints (equal stage instances run once) and the SOURCE_DATE_EPOCH of a stage.

use super::*;
use crate::options::{NamedContext, PullPolicy};

/// SOURCE_DATE_EPOCH naming a stage: the time of that stage's one remote source,
/// found before lowering for real so that `ARG SOURCE_DATE_EPOCH` sees the number
/// (BuildKit dockerfile2llb/epoch.go: the response's Last-Modified, else the newest
/// mtime in the downloaded archive, else no epoch). Returns the URL resolved, so
/// the build does not ask for it again.
pub(super) async fn epoch_from_stage(
    df: &kiln_frontend::Dockerfile,
    opts: &mut BuildOptions,
    host: &Platform,
    target: &Platform,
) -> Result<BTreeMap<String, crate::steps::urlcache::Resolved>> {
    let lower_opts = LowerOptions {
        build_args: opts.build_args.clone(),
        target: opts.target.clone(),
        target_platform: target.clone(),
        build_platform: host.clone(),
        ..Default::default()
    };
    // Only the build arg or a global ARG can name a stage (frontend lower/epoch.rs):
    // without either, no extra lowering on every build.
    let global_epoch_arg = df
        .instructions
        .iter()
        .take_while(|i| !matches!(i.command, kiln_frontend::Command::From { .. }))
        .any(|i| matches!(&i.command, kiln_frontend::Command::Arg(a) if a.iter().any(|(k, _)| k == "SOURCE_DATE_EPOCH")));
    if !global_epoch_arg && !opts.build_args.contains_key("SOURCE_DATE_EPOCH") {
        return Ok(BTreeMap::new());
    }
    // A Dockerfile that does not lower here fails below with the real error.
    let Ok(graph) = kiln_frontend::lower(df, &lower_opts) else { return Ok(BTreeMap::new()) };
    let Some(kiln_frontend::SourceDateEpoch::Stage(i)) = graph.source_date_epoch else { return Ok(BTreeMap::new()) };
    let url = epoch_source(&graph.stages[i])?;
    let (dir, store_dir) = (opts.state_dir.clone(), opts.state_dir.join("content"));
    let resolved = tokio::task::spawn_blocking(move || -> Result<_> {
        let store = ContentStore::open(&store_dir)?;
        let map = crate::steps::urlcache::resolve_all(&dir, &store, std::slice::from_ref(&url), BTreeMap::new())?;
        let r = &map[&url];
        let t = match r.mtime {
            Some(t) => Some(t),
            None => crate::steps::urlcache::archive_max_mtime(&store, &r.digest)?,
        };
        Ok((map, t))
    })
    .await
    .context("resolving the SOURCE_DATE_EPOCH stage was interrupted")??;
    if let Some(t) = resolved.1 {
        opts.build_args.insert("SOURCE_DATE_EPOCH".into(), t.to_string());
    }
    Ok(resolved.0)
}

/// The one remote source of a SOURCE_DATE_EPOCH stage (the frontend checked the
/// stage: FROM scratch and one ADD of one remote source).
pub(super) fn epoch_source(stage: &Stage) -> Result<String> {
    let url = stage.steps.iter().find_map(|s| match &s.kind {
        StepKind::Add(spec) => spec.sources.first().cloned(),
        _ => None,
    });
    match url {
        Some(u) if crate::steps::fetch::is_git(&u) => {
            bail!("SOURCE_DATE_EPOCH from a stage's git source ({u}) is not supported yet: give a number of seconds")
        }
        Some(u) if crate::steps::fetch::is_http(&u) => Ok(u),
        _ => bail!("the SOURCE_DATE_EPOCH stage has no remote ADD source"),
    }
}

/// The platform a stage runs for: its `FROM --platform`, else the target's.
pub(super) fn stage_platform(stage: &Stage, target: &Platform) -> Result<Platform> {
    match stage.platform.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => Platform::parse(p).with_context(|| format!("FROM --platform={p} at {}:{}", stage.loc.file, stage.loc.line)),
        None => Ok(target.clone()),
    }
}

/// Identity of a stage instance: its base, platform, steps and the identities of the
/// stages it reads. Equal fingerprints build equal images, so they run once.
pub(super) fn fingerprint(stage: &Stage, platform: &Platform, deps: &BTreeMap<StageIdx, String>) -> Result<String> {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    h.update((platform).to_string().as_bytes());
    h.update(serde_json::to_vec(&stage.steps)?);
    match &stage.base {
        Base::Scratch => h.update(b"scratch"),
        Base::Image(r) => h.update(format!("image:{r}").as_bytes()),
        Base::Stage(i) => h.update(format!("stage:{}", deps.get(i).map(String::as_str).unwrap_or("?")).as_bytes()),
    }
    for d in &stage.deps {
        h.update(format!("dep:{}", deps.get(d).map(String::as_str).unwrap_or("?")).as_bytes());
    }
    Ok(hex::encode(h.finalize()))
}

/// Images a graph reads (FROM and COPY --from), with the platform of each use.
pub(super) fn images_needed(graph: &BuildGraph, target: &Platform) -> Result<Vec<(String, Platform)>> {
    let mut out = Vec::new();
    for &i in &graph.needed() {
        let stage = &graph.stages[i];
        let p = stage_platform(stage, target)?;
        if let Base::Image(r) = &stage.base {
            out.push((r.clone(), p.clone()));
        }
        // COPY --from=IMAGE and RUN --mount=from=IMAGE alike.
        for step in &stage.steps {
            for input in &step.inputs {
                if let kiln_frontend::StepInput::Image(r) = input {
                    out.push((r.clone(), p.clone()));
                }
            }
        }
    }
    Ok(out)
}

/// `# syntax=IMAGE` asks BuildKit to run that frontend. kiln has BuildKit's
/// Dockerfile frontend built in: the `docker/dockerfile` images (any tag, `-labs`,
/// `-upstream`) mean it; any other frontend cannot be run, and building with the
/// built-in one instead could give another image, so that is an error.
pub(super) fn check_syntax_directive(df: &kiln_frontend::Dockerfile) -> Result<()> {
    let Some(d) = df.directives.iter().find(|d| d.name == "syntax") else { return Ok(()) };
    let image = d.value.split_whitespace().next().unwrap_or("");
    let name = image.split(['@']).next().unwrap_or("");
    let name = match name.rsplit_once(':') {
        Some((n, tag)) if !tag.contains('/') => n,
        _ => name,
    };
    let name = name.trim_start_matches("docker.io/");
    if matches!(name, "docker/dockerfile" | "docker/dockerfile-upstream") {
        return Ok(());
    }
    bail!(
        "{}:{}: # syntax={image}: kiln builds with BuildKit's Dockerfile frontend built in (the docker/dockerfile images) and cannot run the frontend {name:?}",
        d.loc.file,
        d.loc.line
    )
}

/// An image that could not be pulled, by name: the error says so, and the caller
/// names where the Dockerfile asks for it.
#[derive(Debug, thiserror::Error)]
#[error("pulling image {reference} for {platform}")]
pub(super) struct PullFailed {
    name: String,
    reference: String,
    platform: String,
}

/// A failed pull, located and explained as BuildKit does: the Dockerfile line that
/// names the image, and a stage of a close name when it was probably meant
/// (`FROM bulid` for the stage `build`).
pub(super) fn explain_pull_error(e: anyhow::Error, df: &kiln_frontend::Dockerfile) -> anyhow::Error {
    let Some(pf) = e.downcast_ref::<PullFailed>() else { return e };
    let name = pf.name.clone();
    let stages: Vec<String> = df
        .instructions
        .iter()
        .filter_map(|i| match &i.command {
            kiln_frontend::Command::From { name: Some(n), .. } => Some(n.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    let origin = df.instructions.iter().find_map(|i| {
        let names_it = match &i.command {
            kiln_frontend::Command::From { image, .. } => image == &name,
            _ => i.flags.iter().any(|f| f.name == "from" && f.value.as_deref() == Some(name.as_str())),
        };
        names_it.then(|| format!("{}:{}", i.loc.file, i.loc.line))
    });
    let hint = kiln_frontend::suggest::did_you_mean(
        kiln_frontend::suggest::search(&name.to_ascii_lowercase(), stages.iter().map(String::as_str), true).as_deref(),
    );
    let what = match origin {
        Some(at) => format!("{at}: {name:?} is not a stage and could not be pulled as an image{hint}"),
        None => format!("{name:?} could not be pulled{hint}"),
    };
    e.context(what)
}

/// The image `reference` names for `platform`, from where `--pull` says: a named
/// local image (`kiln images`) unless `always`, else its registry unless `never`.
async fn resolve_image(
    registry: &Registry,
    store: &ContentStore,
    policy: PullPolicy,
    base_cache: Option<&std::path::Path>,
    ttl: std::time::Duration,
    reference: &Reference,
    platform: &Platform,
) -> Result<(kiln_cache::PulledImage, Option<Reference>)> {
    if policy != PullPolicy::Always {
        if let Some(img) = store.local_image(reference, platform)? {
            progress::get().info("pull", &format!("using the local image {reference} ({platform})"));
            return Ok((img, None));
        }
    }
    if policy == PullPolicy::Never {
        let names: Vec<String> = store.images()?.iter().map(|i| i.name.to_string()).collect();
        let have = if names.is_empty() { "there are no local images".to_string() } else { format!("local images: {}", names.join(", ")) };
        bail!("{reference} ({platform}) is not a local image and --pull=never forbids pulling it ({have})");
    }
    if let Some(dir) = base_cache {
        if let Some(img) = from_base_cache(registry, store, dir, ttl, reference, platform).await {
            return Ok((img, None));
        }
    }
    progress::get().info("pull", &format!("pulling {reference} ({platform})"));
    // Layers are fetched when a step or an output needs their bytes (`Ctx::ensure_blob`):
    // a stage that only adds files may need none of them (`rootfs::unpack_free`), and
    // a push mounts them from their repository.
    let (img, source) = registry.pull_image_config(reference, platform, store).await?;
    Ok((img, Some(source)))
}

/// The image from the `--base-image-cache` directory, found as Kaniko finds it: by the
/// pinned digest, else by the digest the registry resolves the tag (and platform) to.
/// Anything wrong with the directory or the lookup is a miss: the registry serves then.
async fn from_base_cache(
    registry: &Registry,
    store: &ContentStore,
    dir: &std::path::Path,
    ttl: std::time::Duration,
    reference: &Reference,
    platform: &Platform,
) -> Option<kiln_cache::PulledImage> {
    use crate::export::base_cache::{import, lookup, Lookup};
    let mut digests: Vec<kiln_oci::Digest> = reference.digest().into_iter().cloned().collect();
    if !digests.iter().any(|d| matches!(lookup(dir, d, ttl), Lookup::Fresh(_))) {
        match crate::export::base_cache::platform_manifest_digest(registry, reference, platform).await {
            Ok(d) => digests.push(d),
            Err(e) => tracing::debug!("base image cache: resolving {reference}: {e:#}"),
        }
    }
    for d in digests {
        match lookup(dir, &d, ttl) {
            Lookup::Fresh(path) => match import(store, &path, &d) {
                Ok(img) => {
                    progress::get().info("pull", &format!("using {reference} ({platform}) from the base image cache {}", path.display()));
                    return Some(img);
                }
                Err(e) => progress::get().warn(&format!("base image cache entry {} not used: {e:#}", path.display())),
            },
            Lookup::Expired => tracing::debug!("base image cache: {reference} ({d}) is older than the cache TTL"),
            Lookup::Missing => tracing::debug!("base image cache: no entry for {reference} ({d})"),
        }
    }
    None
}


pub(super) async fn pull_all(
    registry: &Registry,
    store: &ContentStore,
    opts: &BuildOptions,
    pulled: &mut PulledMap,
    wanted: &[(String, Platform)],
) -> Result<()> {
    let policy = opts.pull;
    let base_ttl = opts.cache_ttl.unwrap_or(crate::export::base_cache::DEFAULT_TTL);
    for (name, p) in wanted {
        let key = (name.clone(), (p).to_string());
        if pulled.contains_key(&key) {
            continue;
        }
        let named = super::named::lookup(&opts.named_contexts, name);
        let (img, layers_from) = match named {
            Some(NamedContext::Layout { path, select }) => {
                (super::named::layout_image(store, path, select.as_deref(), p).with_context(|| format!("--build-context {name}"))?, None)
            }
            Some(NamedContext::Dir(dir)) => {
                (super::named::dir_image(store, dir, p).with_context(|| format!("--build-context {name}"))?, None)
            }
            _ => {
                let reference: Reference = match named {
                    Some(NamedContext::Image(r)) => r.clone(),
                    _ => name.parse().map_err(|e| anyhow!("image {name}: {e}"))?,
                };
                resolve_image(registry, store, policy, opts.base_image_cache.as_deref(), base_ttl, &reference, p).await.map_err(|e| {
                    e.context(PullFailed { name: name.clone(), reference: reference.to_string(), platform: key.1.clone() })
                })?
            }
        };
        let reference = name;
        if img.config.rootfs.diff_ids.len() != img.layers.len() {
            bail!("image {reference}: its config lists {} diff_ids for {} layers", img.config.rootfs.diff_ids.len(), img.layers.len());
        }
        let layers = img
            .layers
            .iter()
            .zip(img.config.rootfs.diff_ids.iter())
            .map(|(d, diff_id)| {
                Ok(Layer {
                    media_type: oci_layer_type(d.media_type().as_ref()),
                    digest: d.digest().to_string().parse()?,
                    size: d.size(),
                    diff_id: diff_id.clone(),
                    annotations: blob_annotations(d.annotations().as_ref()),
                    ztoc: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let manifest_digest = img.manifest_digest.to_string();
        pulled.insert(key, Pulled { state: ImageState::new(img.config, layers), manifest_digest, layers_from });
    }
    Ok(())
}

/// The annotations of a base layer's descriptor that describe its blob and so stay
/// with it in the images built on it: the lazy formats' TOC digest and position
/// (BuildKit keeps them too, so stargz and zstd:chunked bases stay lazy-pullable).
/// Other descriptor annotations belong to the base's manifest and are dropped.
fn blob_annotations(a: Option<&std::collections::HashMap<String, String>>) -> BTreeMap<String, String> {
    a
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("containerd.io/snapshot/stargz/") || k.starts_with("io.containers.estargz.") || k.starts_with("io.github.containers.zstd-chunked."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
