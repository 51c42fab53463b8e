//! Where `kiln diff` reads an image from, given one command-line argument, tried in
//! this order:
//!
//! 1. `oci-layout://DIR[:TAG|@DIGEST]`, or an existing directory holding an
//!    `oci-layout` file: an OCI image layout (the manifest tagged TAG by
//!    `org.opencontainers.image.ref.name`, the blob DIGEST, else the first entry of
//!    `index.json`);
//! 2. an existing file: an OCI archive or a docker archive (`docker save`, also
//!    the classic form with `manifest.json` only), plain tar read in place, gzip
//!    unpacked into an anonymous temp file first;
//! 3. `docker-image://REF` or anything else as an image reference: a named image
//!    of the local content store, else pulled from its registry into it.
//!
//! An index is resolved to the requested platform. Layers are opened one at a time
//! as streams; blobs named by digest are verified while they are read.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use kiln_cache::reference::Reference;
use kiln_cache::registry::{PulledImage, Registry, RegistryOptions};
use kiln_cache::store::ContentStore;
use kiln_oci::{Digest, ImageIndex, ImageManifest, Platform};
use serde_json::Value;

use crate::cmd::diff::tree::Tree;

/// Largest index, manifest or config read into memory.
const MAX_JSON: u64 = 16 << 20;

/// Files of a layout or an archive, by their path inside it.
enum Files {
    Dir(PathBuf),
    /// A tar: regular files (offset, size) and symlinks (docker save links layers).
    Tar { file: File, entries: HashMap<String, (u64, u64)>, links: HashMap<String, String> },
}

fn clean(name: &str) -> String {
    name.split('/').filter(|p| !p.is_empty() && *p != ".").collect::<Vec<_>>().join("/")
}

impl Files {
    fn index_tar(file: File) -> Result<Files> {
        let mut entries = HashMap::new();
        let mut links = HashMap::new();
        {
            let mut ar = tar::Archive::new(&file);
            for e in ar.entries_with_seek().context("reading the archive")? {
                let e = e.context("reading the archive")?;
                let name = clean(&String::from_utf8_lossy(&e.path_bytes()));
                match e.header().entry_type() {
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        entries.insert(name, (e.raw_file_position(), e.size()));
                    }
                    tar::EntryType::Symlink | tar::EntryType::Link => {
                        let target = String::from_utf8_lossy(&e.link_name_bytes().unwrap_or_default()).into_owned();
                        links.insert(name, target);
                    }
                    _ => {}
                }
            }
        }
        Ok(Files::Tar { file, entries, links })
    }

    /// A tar member's name after following symlinks (relative to their directory).
    fn resolve_tar<'a>(entries: &'a HashMap<String, (u64, u64)>, links: &HashMap<String, String>, name: &str) -> Option<&'a (u64, u64)> {
        let mut name = clean(name);
        for _ in 0..8 {
            if let Some(e) = entries.get(&name) {
                return Some(e);
            }
            let target = links.get(&name)?;
            name = match (target.starts_with('/'), name.rsplit_once('/')) {
                (false, Some((dir, _))) => crate::cmd::diff::tree::normalize(&format!("{dir}/{target}"))?,
                _ => crate::cmd::diff::tree::normalize(target)?,
            };
            name = clean(&name);
        }
        None
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + '_>> {
        match self {
            Files::Dir(dir) => {
                if name.split('/').any(|p| p == "..") || name.starts_with('/') {
                    bail!("{name}: not a path inside the layout");
                }
                let p = dir.join(name);
                Ok(Box::new(File::open(&p).with_context(|| format!("opening {}", p.display()))?))
            }
            Files::Tar { file, entries, links } => {
                let &(offset, size) = Self::resolve_tar(entries, links, name).ok_or_else(|| anyhow!("{name}: not in the archive"))?;
                let mut f = file.try_clone().context("reopening the archive")?;
                f.seek(SeekFrom::Start(offset)).context("seeking in the archive")?;
                Ok(Box::new(f.take(size)))
            }
        }
    }

    fn exists(&self, name: &str) -> bool {
        match self {
            Files::Dir(dir) => dir.join(name).is_file(),
            Files::Tar { entries, links, .. } => Self::resolve_tar(entries, links, name).is_some(),
        }
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open(name)?.take(MAX_JSON + 1).read_to_end(&mut buf).with_context(|| format!("reading {name}"))?;
        if buf.len() as u64 > MAX_JSON {
            bail!("{name}: larger than {MAX_JSON} bytes");
        }
        Ok(buf)
    }

    fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let bytes = self.read(&blob_name(d))?;
        let got = Digest::of(&bytes);
        if got != *d {
            bail!("blob {d} has digest {got}");
        }
        Ok(bytes)
    }
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// One layer: where it is and, when its name is a digest, that digest.
#[derive(Debug, Clone)]
pub struct LayerRef {
    name: String,
    digest: Option<Digest>,
}

/// An image found: its config and layers, and what keeps them readable.
pub struct Loaded {
    /// How the image was found (for messages).
    pub description: String,
    pub config: Value,
    layers: Vec<LayerRef>,
    files: Files,
    /// Holds the store's shared lock while its blobs are read.
    _store: Option<ContentStore>,
}

impl Loaded {
    /// The file tree: every layer applied in order, each streamed once.
    pub fn tree(&self) -> Result<Tree> {
        let mut tree = Tree::default();
        for (i, l) in self.layers.iter().enumerate() {
            let what = || format!("layer {} ({})", i + 1, l.digest.as_ref().map(|d| d.to_string()).unwrap_or_else(|| l.name.clone()));
            let mut r = kiln_oci::Sha256Reader::new(self.files.open(&l.name).with_context(what)?);
            tree.apply_layer(&mut r, i).with_context(what)?;
            io::copy(&mut r, &mut io::sink()).with_context(what)?;
            let (_, got, _) = r.finish();
            if let Some(want) = &l.digest {
                if *want != got {
                    bail!("{}: the blob's digest is {got}", what());
                }
            }
        }
        Ok(tree)
    }
}

/// How an argument names an image in a layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    First,
    Tag(String),
    Digest(Digest),
}

/// What an argument is, before anything is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    Layout(PathBuf, Pick),
    Archive(PathBuf),
    Reference(Reference),
}

/// Sorts an argument into one of the forms (see the module comment).
pub fn classify(arg: &str) -> Result<Form> {
    if let Some(rest) = arg.strip_prefix("oci-layout://") {
        if Path::new(rest).is_dir() {
            return Ok(Form::Layout(rest.into(), Pick::First));
        }
        if let Some((dir, d)) = rest.rsplit_once('@') {
            let d: Digest = d.parse().map_err(|e| anyhow!("{d:?}: {e}"))?;
            return Ok(Form::Layout(dir.into(), Pick::Digest(d)));
        }
        if let Some((dir, tag)) = rest.rsplit_once(':').filter(|(_, t)| !t.contains('/') && !t.is_empty()) {
            return Ok(Form::Layout(dir.into(), Pick::Tag(tag.into())));
        }
        return Ok(Form::Layout(rest.into(), Pick::First));
    }
    let p = Path::new(arg);
    if p.is_dir() {
        if !p.join("oci-layout").is_file() {
            bail!("{arg} is a directory without an oci-layout file, not an OCI image layout");
        }
        return Ok(Form::Layout(p.into(), Pick::First));
    }
    if p.is_file() {
        return Ok(Form::Archive(p.into()));
    }
    if arg.starts_with('/') || arg.starts_with("./") || arg.starts_with("../") {
        bail!("no such file or directory");
    }
    let r = arg.strip_prefix("docker-image://").unwrap_or(arg);
    let r: Reference = r.parse().map_err(|e| anyhow!("no such file or directory, and not an image reference: {e}"))?;
    Ok(Form::Reference(r))
}

fn parse_digest(d: &oci_spec::image::Digest) -> Result<Digest> {
    d.to_string().parse().map_err(|e| anyhow!("digest {d}: {e}"))
}

fn is_index(bytes: &[u8]) -> Result<bool> {
    kiln_cache::images::is_index(bytes).context("manifest is not JSON")
}

/// Follows `digest` (an index or a manifest in `files`) down to the platform's image.
fn from_manifest(files: Files, mut digest: Digest, platform: &Platform, description: String) -> Result<Loaded> {
    let mut bytes = files.read_blob(&digest)?;
    for _ in 0..3 {
        if !is_index(&bytes)? {
            break;
        }
        let index: ImageIndex = serde_json::from_slice(&bytes).with_context(|| format!("parsing index {digest}"))?;
        let chosen = kiln_cache::platform::select(index.manifests(), platform).ok_or_else(|| {
            let have: Vec<String> = index.manifests().iter().filter_map(|m| m.platform().as_ref().map(kiln_cache::platform::as_written)).collect();
            anyhow!("index {digest} has no image for {platform} (it has {})", have.join(", "))
        })?;
        digest = parse_digest(chosen.digest())?;
        bytes = files.read_blob(&digest)?;
    }
    let manifest: ImageManifest = serde_json::from_slice(&bytes).with_context(|| format!("parsing manifest {digest}"))?;
    let config_digest = parse_digest(manifest.config().digest())?;
    let config = serde_json::from_slice(&files.read_blob(&config_digest)?).with_context(|| format!("parsing config {config_digest}"))?;
    let layers = manifest
        .layers()
        .iter()
        .map(|l| {
            let d = parse_digest(l.digest())?;
            Ok(LayerRef { name: blob_name(&d), digest: Some(d) })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Loaded { description, config, layers, files, _store: None })
}

/// The entry of a layout's `index.json` that `pick` names.
fn from_layout(files: Files, pick: &Pick, platform: &Platform, place: &str) -> Result<Loaded> {
    let digest = match pick {
        Pick::Digest(d) => d.clone(),
        _ => {
            let index: Value = serde_json::from_slice(&files.read("index.json")?).context("parsing index.json")?;
            let entries = index["manifests"].as_array().cloned().unwrap_or_default();
            let name = |e: &Value, k: &str| e["annotations"][k].as_str().map(str::to_string);
            let found = match pick {
                Pick::Tag(t) => entries.iter().find(|e| {
                    name(e, "org.opencontainers.image.ref.name").as_deref() == Some(t)
                        || name(e, "io.containerd.image.name").is_some_and(|n| n == *t || n.ends_with(&format!(":{t}")))
                }),
                _ => entries.first(),
            };
            let Some(e) = found else {
                let tags: Vec<String> = entries.iter().filter_map(|e| name(e, "org.opencontainers.image.ref.name")).collect();
                match pick {
                    Pick::Tag(t) => bail!("{place}: no image tagged {t:?} in index.json (tags: {})", tags.join(", ")),
                    _ => bail!("{place}: index.json names no image"),
                }
            };
            e["digest"].as_str().unwrap_or_default().parse().map_err(|x| anyhow!("{place}: index.json: {x}"))?
        }
    };
    from_manifest(files, digest, platform, place.to_string())
}

/// A classic `docker save` archive: `manifest.json` naming config and layer files.
fn from_docker_manifest(files: Files, place: &str) -> Result<Loaded> {
    let list: Value = serde_json::from_slice(&files.read("manifest.json")?).context("parsing manifest.json")?;
    let first = list.as_array().and_then(|l| l.first()).ok_or_else(|| anyhow!("{place}: manifest.json lists no image"))?;
    let config_name = first["Config"].as_str().ok_or_else(|| anyhow!("{place}: manifest.json has no Config"))?;
    let config = serde_json::from_slice(&files.read(config_name)?).with_context(|| format!("parsing {config_name}"))?;
    let layers = first["Layers"]
        .as_array()
        .map(|l| l.iter().filter_map(Value::as_str).map(|n| LayerRef { name: n.to_string(), digest: None }).collect())
        .unwrap_or_default();
    Ok(Loaded { description: place.to_string(), config, layers, files, _store: None })
}

fn open_archive(path: &Path) -> Result<Files> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).with_context(|| format!("reading {}", path.display()))?;
    file.seek(SeekFrom::Start(0))?;
    if n == 2 && magic == [0x1f, 0x8b] {
        let mut tmp = tempfile::tempfile().context("creating a temp file for the unpacked archive")?;
        io::copy(&mut kiln_snapshotter::gunzip::MultiGzDecoder::new(file), &mut tmp).context("gunzipping the archive")?;
        tmp.seek(SeekFrom::Start(0))?;
        return Files::index_tar(tmp);
    }
    Files::index_tar(file)
}

/// Loads images; the registry runtime and the content store are made on first use.
pub struct Loader {
    registry: RegistryOptions,
    platform: Platform,
    /// kiln's state dir (`$KILN_ROOT`), needed for references only.
    state: Result<PathBuf, String>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Loader {
    pub fn new(registry: RegistryOptions, platform: Platform, state: Result<PathBuf, String>) -> Loader {
        Loader { registry, platform, state, runtime: None }
    }

    pub fn load(&mut self, arg: &str) -> Result<Loaded> {
        match classify(arg)? {
            Form::Layout(dir, pick) => {
                if !dir.join("oci-layout").is_file() {
                    bail!("{} is not an OCI image layout (no oci-layout file)", dir.display());
                }
                from_layout(Files::Dir(dir.clone()), &pick, &self.platform, &format!("OCI layout {}", dir.display()))
            }
            Form::Archive(path) => {
                let files = open_archive(&path)?;
                let place = format!("archive {}", path.display());
                if files.exists("index.json") {
                    from_layout(files, &Pick::First, &self.platform, &place)
                } else if files.exists("manifest.json") {
                    from_docker_manifest(files, &place)
                } else {
                    bail!("{}: neither an OCI archive (index.json) nor a docker archive (manifest.json)", path.display())
                }
            }
            Form::Reference(r) => self.from_reference(&r),
        }
    }

    fn from_reference(&mut self, r: &Reference) -> Result<Loaded> {
        let state = self.state.clone().map_err(|e| anyhow!("kiln's state dir: {e}"))?;
        let store = ContentStore::open(&state.join("content")).with_context(|| format!("opening the content store in {}", state.display()))?;
        let (image, description) = match store.local_image(r, &self.platform).context("reading the local images")? {
            Some(img) => (img, format!("local image {r}")),
            None => {
                if self.runtime.is_none() {
                    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting the async runtime")?;
                    self.runtime = Some(rt);
                }
                let rt = self.runtime.as_ref().ok_or_else(|| anyhow!("no async runtime"))?;
                let registry = Registry::new(self.registry.clone());
                let img = rt.block_on(registry.pull_image(r, &self.platform, &store)).with_context(|| format!("pulling {r}"))?;
                (img, format!("registry image {r}"))
            }
        };
        from_store(store, image, description)
    }
}

fn from_store(store: ContentStore, image: PulledImage, description: String) -> Result<Loaded> {
    let config_bytes = store.read(&image.config_digest).context("reading the config")?;
    let config = serde_json::from_slice(&config_bytes).context("parsing the config")?;
    let layers = image
        .layers
        .iter()
        .map(|l| {
            let d = parse_digest(l.digest())?;
            Ok(LayerRef { name: blob_name(&d), digest: Some(d) })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Loaded { description, config, layers, files: Files::Dir(store.root().to_path_buf()), _store: Some(store) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_oci::media;
    use serde_json::json;

    fn layer_tar(name: &str, content: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(content.len() as u64);
        b.append_data(&mut h, name, content).unwrap();
        b.into_inner().unwrap()
    }

    fn put(dir: &Path, bytes: &[u8]) -> Digest {
        let d = Digest::of(bytes);
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join(blob_name(&d)), bytes).unwrap();
        d
    }

    fn desc(mt: &str, d: &Digest, len: usize) -> Value {
        json!({"mediaType": mt, "digest": d.to_string(), "size": len})
    }

    /// An image for `arch` whose one layer holds /arch with `arch` as content.
    fn image(dir: &Path, arch: &str) -> Value {
        let layer = layer_tar("arch", arch.as_bytes());
        let ld = put(dir, &layer);
        let cfg = serde_json::to_vec(&json!({"architecture": arch, "os": "linux", "config": {"Env": [format!("ARCH={arch}")]}, "rootfs": {"type": "layers", "diff_ids": [ld.to_string()]}})).unwrap();
        let cd = put(dir, &cfg);
        let m = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "config": desc(media::OCI_CONFIG, &cd, cfg.len()), "layers": [desc(media::OCI_LAYER_TAR, &ld, layer.len())]})).unwrap();
        let md = put(dir, &m);
        let mut e = desc(media::OCI_MANIFEST, &md, m.len());
        e["platform"] = json!({"os": "linux", "architecture": arch});
        e
    }

    /// A layout: tag `multi` → an index of amd64 and arm64, tag `one` → arm64 alone.
    fn layout(dir: &Path) -> Digest {
        let (amd, arm) = (image(dir, "amd64"), image(dir, "arm64"));
        let idx = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": [amd, arm.clone()]})).unwrap();
        let id = put(dir, &idx);
        let mut multi = desc(media::OCI_INDEX, &id, idx.len());
        multi["annotations"] = json!({"org.opencontainers.image.ref.name": "multi"});
        let mut one = arm.clone();
        one["annotations"] = json!({"org.opencontainers.image.ref.name": "one"});
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [multi, one]})).unwrap()).unwrap();
        arm["digest"].as_str().unwrap().parse().unwrap()
    }

    fn loader(arch: &str) -> Loader {
        Loader::new(RegistryOptions::default(), Platform::new("linux", arch, None), Err("none in this test".into()))
    }

    fn arch_of(l: &Loaded) -> String {
        l.config["architecture"].as_str().unwrap().to_string()
    }

    #[test]
    fn layouts_by_tag_digest_and_platform() {
        let d = tempfile::tempdir().unwrap();
        let arm = layout(d.path());
        let dir = d.path().display().to_string();
        assert_eq!(arch_of(&loader("amd64").load(&dir).unwrap()), "amd64");
        assert_eq!(arch_of(&loader("arm64").load(&format!("oci-layout://{dir}:multi")).unwrap()), "arm64");
        assert_eq!(arch_of(&loader("amd64").load(&format!("oci-layout://{dir}:one")).unwrap()), "arm64");
        let by_digest = loader("amd64").load(&format!("oci-layout://{dir}@{arm}")).unwrap();
        assert_eq!(arch_of(&by_digest), "arm64");
        assert_eq!(by_digest.tree().unwrap().nodes["/arch"].digest, Some(Digest::of(b"arm64")));
        let err = loader("s390x").load(&dir).err().unwrap();
        assert!(format!("{err:#}").contains("no image for linux/s390x"), "{err:#}");
        let err = loader("amd64").load(&format!("oci-layout://{dir}:nope")).err().unwrap();
        assert!(format!("{err:#}").contains("no image tagged \"nope\" in index.json (tags: multi, one)"), "{err:#}");
    }

    #[test]
    fn a_corrupted_layer_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        layout(d.path());
        let l = loader("amd64").load(&d.path().display().to_string()).unwrap();
        let name = &l.layers[0].name;
        let mut bytes = std::fs::read(d.path().join(name)).unwrap();
        bytes[600] ^= 1;
        std::fs::write(d.path().join(name), bytes).unwrap();
        let err = l.tree().unwrap_err();
        assert!(format!("{err:#}").contains("the blob's digest is"), "{err:#}");
    }

    fn tar_dir(dir: &Path, symlink_layer: Option<(&str, &str)>) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        b.append_dir_all(".", dir).unwrap();
        if let Some((name, target)) = symlink_layer {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            b.append_link(&mut h, name, target).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn archives_plain_gzip_and_classic_docker() {
        let d = tempfile::tempdir().unwrap();
        let lay = d.path().join("layout");
        layout(&lay);
        let plain = d.path().join("img.tar");
        std::fs::write(&plain, tar_dir(&lay, None)).unwrap();
        assert_eq!(arch_of(&loader("arm64").load(&plain.display().to_string()).unwrap()), "arm64");
        let gz = d.path().join("img.tar.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut enc, &tar_dir(&lay, None)).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let l = loader("amd64").load(&gz.display().to_string()).unwrap();
        assert_eq!(l.tree().unwrap().nodes["/arch"].digest, Some(Digest::of(b"amd64")));

        // The classic form: manifest.json naming files, one layer a symlink to another.
        let classic = d.path().join("classic");
        std::fs::create_dir_all(classic.join("l1")).unwrap();
        std::fs::write(classic.join("l1/layer.tar"), layer_tar("etc/x", b"classic")).unwrap();
        std::fs::write(classic.join("cfg.json"), br#"{"architecture":"amd64","os":"linux","config":{}}"#).unwrap();
        std::fs::write(classic.join("manifest.json"), br#"[{"Config":"cfg.json","RepoTags":["x:1"],"Layers":["l1/layer.tar","l2/layer.tar"]}]"#).unwrap();
        let ar = d.path().join("classic.tar");
        std::fs::write(&ar, tar_dir(&classic, Some(("l2/layer.tar", "../l1/layer.tar")))).unwrap();
        let l = loader("arm64").load(&ar.display().to_string()).unwrap();
        assert_eq!(l.layers.len(), 2);
        assert_eq!(l.tree().unwrap().nodes["/etc/x"].digest, Some(Digest::of(b"classic")));
    }

    #[test]
    fn a_named_local_image_comes_from_the_store() {
        let d = tempfile::tempdir().unwrap();
        let lay = d.path().join("layout");
        layout(&lay);
        let store = ContentStore::open(&d.path().join("content")).unwrap();
        let amd = image(&lay, "amd64");
        for e in std::fs::read_dir(lay.join("blobs/sha256")).unwrap() {
            store.put(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
        }
        let desc: kiln_oci::Descriptor = serde_json::from_value(amd).unwrap();
        store.name_image(&"localhost/mine:1".parse().unwrap(), &desc).unwrap();
        drop(store);
        let mut l = Loader::new(RegistryOptions::default(), Platform::new("linux", "amd64", None), Ok(d.path().into()));
        let img = l.load("docker-image://localhost/mine:1").unwrap();
        assert_eq!(img.description, "local image localhost/mine:1");
        assert_eq!(img.tree().unwrap().nodes["/arch"].digest, Some(Digest::of(b"amd64")));
        let err = Loader::new(RegistryOptions::default(), Platform::host(), Err("HOME is not set".into())).load("localhost/mine:1").err().unwrap();
        assert!(format!("{err:#}").contains("kiln's state dir: HOME is not set"), "{err:#}");
    }

    #[test]
    fn classifies_arguments() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().display().to_string();
        assert!(format!("{:#}", classify(&dir).unwrap_err()).contains("without an oci-layout file"));
        assert_eq!(classify(&format!("oci-layout://{dir}:v1")).unwrap(), Form::Layout(d.path().into(), Pick::Tag("v1".into())));
        assert_eq!(classify(&format!("oci-layout://{dir}")).unwrap(), Form::Layout(d.path().into(), Pick::First));
        let r = classify("docker-image://127.0.0.1:5000/a/b:1").unwrap();
        assert_eq!(r, Form::Reference("127.0.0.1:5000/a/b:1".parse().unwrap()));
        assert!(matches!(classify("busybox").unwrap(), Form::Reference(_)));
        assert_eq!(format!("{:#}", classify("/no/such/thing.tar").unwrap_err()), "no such file or directory");
        assert!(format!("{:#}", classify("No/Such").unwrap_err()).contains("no such file or directory, and not an image reference"));
    }
}
