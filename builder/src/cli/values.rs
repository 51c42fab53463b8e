//! Values of flags shared by several subcommands.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};

use crate::options::{Output, SecretSource, SecretSpec, SshSpec};

/// `--build-arg KEY=VALUE`s; a bare KEY is taken from the environment and ignored
/// when unset, as Docker does.
pub fn parse_build_args(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut build_args = BTreeMap::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                build_args.insert(k.to_string(), v.to_string());
            }
            Some(_) => bail!("--build-arg {a:?}: expected KEY=VALUE"),
            None => {
                if let Ok(v) = std::env::var(a) {
                    build_args.insert(a.clone(), v);
                }
            }
        }
    }
    Ok(build_args)
}


/// `--output` as BuildKit takes it: `type=oci|docker|local|tar,dest=…`, or a bare
/// `-` (a tar of the rootfs on stdout) or a bare directory (`type=local`).
pub fn parse_output(spec: &str) -> Result<Output> {
    if spec == "-" {
        return Ok(Output::Tar { dest: PathBuf::from("-") });
    }
    if !spec.contains('=') {
        return Ok(Output::Local { dest: PathBuf::from(spec) });
    }
    let mut kind = None;
    let mut dest = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("type", v)) => kind = Some(v.to_string()),
            Some(("dest", v)) => dest = Some(PathBuf::from(v)),
            _ => bail!("--output {spec:?}: unknown field {part:?} (expected type=oci,dest=DIR)"),
        }
    }
    let need = |what: &str| anyhow!("--output {spec:?}: this type needs dest={what}");
    match kind.as_deref() {
        Some("oci") => Ok(Output::OciLayout { dest: dest.ok_or_else(|| need("DIR"))? }),
        Some("docker") => Ok(Output::DockerArchive { dest: dest.ok_or_else(|| need("FILE.tar"))? }),
        Some("local") => Ok(Output::Local { dest: dest.ok_or_else(|| need("DIR"))? }),
        Some("tar") => Ok(Output::Tar { dest: dest.ok_or_else(|| need("FILE.tar or -"))? }),
        Some(other) => bail!("--output {spec:?}: unsupported type {other:?} (supported: oci, docker, local, tar, image, registry)"),
        None => bail!("--output {spec:?}: missing type= (e.g. type=oci,dest=DIR)"),
    }
}

/// `--output type=image|registry,…` as BuildKit takes it: where an image goes and
/// how its layers are written, gathered over all such outputs and applied as `-t`,
/// `--push` and the compression flags would be.
#[derive(Debug, Default, PartialEq)]
pub struct ImageOutput {
    pub names: Vec<String>,
    pub push: bool,
    pub compression: Option<String>,
    pub compression_level: Option<i32>,
    pub force_compression: bool,
    pub oci_mediatypes: Option<bool>,
}

fn flag_bool(spec: &str, k: &str, v: &str) -> Result<bool> {
    match v {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => bail!("--output {spec:?}: {k}={v}: expected true or false"),
    }
}

impl ImageOutput {
    /// Takes `spec` when it is an image output (returns false for the others).
    pub fn take(&mut self, spec: &str) -> Result<bool> {
        let kind = spec.split(',').find_map(|p| p.strip_prefix("type="));
        let push_default = match kind {
            Some("image") => false,
            Some("registry") => true,
            _ => return Ok(false),
        };
        let mut push = push_default;
        let mut after_name = false;
        for part in spec.split(',').map(|p| p.trim_matches('"')) {
            let Some((k, v)) = part.split_once('=') else {
                // `name=a,b` without BuildKit's CSV quotes: b is another name.
                if after_name && !part.is_empty() {
                    self.names.push(part.to_string());
                    continue;
                }
                bail!("--output {spec:?}: {part:?} is not KEY=VALUE");
            };
            after_name = k == "name";
            match k {
                "type" => {}
                "name" => self.names.extend(v.split(',').filter(|n| !n.is_empty()).map(str::to_string)),
                "push" => push = flag_bool(spec, k, v)?,
                "compression" => {
                    v.parse::<kiln_snapshotter::Compression>().map_err(|e| anyhow!("--output {spec:?}: compression={v}: {e}"))?;
                    self.compression = Some(v.to_string());
                }
                "compression-level" => {
                    self.compression_level = Some(v.parse().map_err(|_| anyhow!("--output {spec:?}: compression-level={v}: expected a number"))?)
                }
                "force-compression" => self.force_compression = flag_bool(spec, k, v)?,
                "oci-mediatypes" => self.oci_mediatypes = Some(flag_bool(spec, k, v)?),
                // What kiln does anyway: nothing is stored in a daemon, the image is
                // complete in the content store.
                "store" | "unpack" if flag_bool(spec, k, v).is_ok() => {}
                "registry.insecure" => bail!("--output {spec:?}: registry.insecure= is not supported here; pass --insecure-registry HOST"),
                _ => {
                    const KEYS: [&str; 8] = ["name", "push", "compression", "compression-level", "force-compression", "oci-mediatypes", "store", "unpack"];
                    let hint = kiln_frontend::suggest::did_you_mean(kiln_frontend::suggest::search(k, KEYS, true).as_deref());
                    bail!("--output {spec:?}: {k}= is not supported{hint} (supported: {})", KEYS[..6].join(", "))
                }
            }
        }
        self.push |= push;
        Ok(true)
    }
}

pub fn parse_secret(s: &str) -> Result<SecretSpec> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    let mut kind = None;
    for field in s.split(',') {
        match field.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("src" | "source", v)) => src = Some(v.to_string()),
            Some(("env", v)) => env = Some(v.to_string()),
            Some(("type", v)) => kind = Some(v.to_string()),
            _ => bail!("--secret {s:?}: unknown field {field:?} (expected id=ID,src=PATH or id=ID,env=VAR)"),
        }
    }
    let id = id.filter(|i| !i.is_empty()).ok_or_else(|| anyhow!("--secret {s:?}: missing id="))?;
    let source = match (kind.as_deref(), src, env) {
        (_, Some(p), None) => SecretSource::File(PathBuf::from(p)),
        (_, None, Some(v)) => SecretSource::Env(v),
        (Some("env"), None, None) => SecretSource::Env(id.clone()),
        (Some("file") | None, None, None) => {
            // Docker's shorthand: `--secret id=X` reads env X if set, else a file named X.
            if std::env::var_os(&id).is_some() {
                SecretSource::Env(id.clone())
            } else {
                SecretSource::File(PathBuf::from(&id))
            }
        }
        (_, Some(_), Some(_)) => bail!("--secret {s:?}: give src= or env=, not both"),
        (Some(t), _, _) => bail!("--secret {s:?}: unknown type {t:?} (file or env)"),
    };
    Ok(SecretSpec { id, source })
}

pub fn parse_ssh(s: &str) -> Result<SshSpec> {
    let (id, path) = match s.split_once('=') {
        Some((id, p)) => (id.to_string(), Some(PathBuf::from(p))),
        None => (s.to_string(), None),
    };
    if id.is_empty() {
        bail!("--ssh {s:?}: missing id (e.g. default=$SSH_AUTH_SOCK)");
    }
    let socket = match path {
        Some(p) => p,
        None => std::env::var_os("SSH_AUTH_SOCK")
            .map(PathBuf::from)
            .ok_or_else(|| anyhow!("--ssh {id}: no socket given and SSH_AUTH_SOCK is not set"))?,
    };
    Ok(SshSpec { id, socket })
}

/// The registry flags of every subcommand that talks to a registry (`build`,
/// `executor` through it, `index create`): declared once here.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryFlags {
    /// Registry to speak plain HTTP to (127.0.0.1 and localhost always are). Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Mirror for docker.io images (host[:port][/prefix]). Repeatable, tried in order.
    #[arg(long = "registry-mirror", value_name = "HOST")]
    pub registry_mirrors: Vec<String>,
    /// Rewrite pulls of FROM-prefixed references to TO (FROM=TO). Repeatable.
    #[arg(long = "registry-map", value_name = "FROM=TO")]
    pub registry_map: Vec<String>,
    /// Extra CA certificate (PEM) for registries. Repeatable.
    #[arg(long = "registry-certificate", value_name = "FILE")]
    pub registry_certificates: Vec<PathBuf>,
    /// Mutual TLS: the client certificate (PEM, the leaf first) and its key (PEM,
    /// unencrypted) to present to REGISTRY (host[:port], or host for every port). Repeatable.
    #[arg(long = "registry-client-cert", value_name = "REGISTRY=CERT,KEY")]
    pub registry_client_certs: Vec<String>,
    /// With --registry-mirror: an image no mirror serves is an error, not a pull
    /// from docker.io.
    #[arg(long = "skip-default-registry-fallback")]
    pub skip_default_registry_fallback: bool,
    /// A push refused because the tag is immutable there (ECR, Artifact Registry)
    /// counts as done, with a warning.
    #[arg(long = "push-ignore-immutable-tag-errors")]
    pub push_ignore_immutable_tag_errors: bool,
    /// Retries for each registry operation (429, 5xx, dropped connections).
    #[arg(long = "push-retry", value_name = "N", default_value_t = 3)]
    pub push_retry: u32,
    /// What pulls and pushes may do short of verified TLS (`kiln executor`'s
    /// Kaniko switches: --insecure, --skip-tls-verify and their -pull and -registry forms).
    #[arg(skip)]
    pub pull_leniency: kiln_cache::Leniency,
    #[arg(skip)]
    pub push_leniency: kiln_cache::Leniency,
}

/// `--registry-client-cert REGISTRY=CERT,KEY` (Kaniko's syntax), its files read and checked.
fn parse_client_cert(v: &str) -> Result<kiln_cache::ClientCert> {
    let parsed = v.split_once('=').and_then(|(r, files)| Some((r, files.split_once(',')?)));
    match parsed {
        Some((registry, (cert, key))) if !registry.is_empty() && !cert.is_empty() && !key.is_empty() && !key.contains(',') => {
            kiln_cache::ClientCert::load(registry, std::path::Path::new(cert), std::path::Path::new(key))
                .map_err(|e| anyhow!("--registry-client-cert {v}: {e}"))
        }
        _ => Err(anyhow!("--registry-client-cert {v:?}: expected REGISTRY=CERTFILE,KEYFILE")),
    }
}

/// The registry flags and `--authfile`, as the commands that talk to a registry
/// besides `build` take them (`push`, `pull`, `inspect`, `index create`).
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryAccess {
    #[command(flatten)]
    pub registry: RegistryFlags,
    /// Docker-style config.json with registry credentials (merged over the usual ones).
    #[arg(long = "authfile", value_name = "FILE")]
    pub authfile: Option<PathBuf>,
}

impl RegistryFlags {
    pub fn to_options(&self) -> Result<kiln_cache::RegistryOptions> {
        Ok(kiln_cache::RegistryOptions {
            insecure: self.insecure_registries.clone(),
            mirrors: self.registry_mirrors.clone(),
            registry_map: self
                .registry_map
                .iter()
                .map(|m| m.split_once('=').map(|(a, b)| (a.to_string(), b.to_string())).ok_or_else(|| anyhow!("--registry-map {m:?}: expected FROM=TO")))
                .collect::<Result<_>>()?,
            ca_certs: self.registry_certificates.clone(),
            client_certs: self.registry_client_certs.iter().map(|v| parse_client_cert(v)).collect::<Result<_>>()?,
            pull: self.pull_leniency.clone(),
            push: self.push_leniency.clone(),
            skip_default_fallback: self.skip_default_registry_fallback,
            ignore_immutable_tags: self.push_ignore_immutable_tag_errors,
            retries: self.push_retry,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{SecretSource, SecretSpec, SshSpec};

    #[test]
    fn parses_secret_flags() {
        assert_eq!(parse_secret("id=a,src=/x").unwrap(), SecretSpec { id: "a".into(), source: SecretSource::File("/x".into()) });
        assert_eq!(parse_secret("id=a,env=TOKEN").unwrap(), SecretSpec { id: "a".into(), source: SecretSource::Env("TOKEN".into()) });
        assert_eq!(parse_secret("id=b,type=env").unwrap().source, SecretSource::Env("b".into()));
        assert!(parse_secret("src=/x").unwrap_err().to_string().contains("missing id"));
        assert!(parse_secret("id=a,src=/x,env=Y").is_err());
        assert!(parse_secret("id=a,bogus=1").is_err());
    }

    #[test]
    fn image_outputs_are_buildkits_spelling() {
        let mut o = ImageOutput::default();
        assert!(o.take("type=image,name=r/a:1,push=true,compression=estargz,compression-level=3,force-compression=true").unwrap());
        assert_eq!(
            o,
            ImageOutput {
                names: vec!["r/a:1".into()],
                push: true,
                compression: Some("estargz".into()),
                compression_level: Some(3),
                force_compression: true,
                oci_mediatypes: None,
            }
        );
        // type=registry pushes; a second name after name= without CSV quotes is a name.
        let mut o = ImageOutput::default();
        assert!(o.take("type=registry,name=r/a:1,r/a:latest").unwrap());
        assert_eq!((o.names.len(), o.push), (2, true));
        // Other types are not image outputs.
        assert!(!ImageOutput::default().take("type=oci,dest=x").unwrap());
        for (spec, want) in [
            ("type=image,name=r/a,compresion=zstd", "compresion= is not supported (did you mean compression?)"),
            ("type=image,name=r/a,compression=brotli", "compression=brotli"),
            ("type=image,name=r/a,push=maybe", "push=maybe: expected true or false"),
            ("type=image,name=r/a,registry.insecure=true", "--insecure-registry"),
        ] {
            let e = ImageOutput::default().take(spec).unwrap_err().to_string();
            assert!(e.contains(want), "{spec}: {e}");
        }
    }

    #[test]
    fn parses_ssh_flags() {
        assert_eq!(parse_ssh("default=/tmp/s").unwrap(), SshSpec { id: "default".into(), socket: "/tmp/s".into() });
        assert!(parse_ssh("=x").is_err());
    }

    #[test]
    fn build_and_index_create_take_the_same_registry_flags() {
        use clap::Parser;
        let flags = ["--insecure-registry", "r:5000", "--registry-mirror", "m", "--registry-map", "a=b", "--registry-certificate", "/ca.pem", "--push-retry", "5"];
        let build = crate::cli::Cli::try_parse_from(["kiln", "build"].iter().chain(&flags).chain(&["."])).unwrap();
        let index = crate::cli::Cli::try_parse_from(["kiln", "index", "create", "r:5000/x:1", "--from", "r:5000/y:1"].iter().chain(&flags)).unwrap();
        let b = match build.command {
            crate::cli::CommandKind::Build(b) => b.registry.to_options().unwrap(),
            _ => unreachable!(),
        };
        let i = match index.command {
            crate::cli::CommandKind::Index { command: crate::cli::index::IndexCommand::Create(c) } => c.access.registry.to_options().unwrap(),
            _ => unreachable!(),
        };
        assert_eq!(format!("{b:?}"), format!("{i:?}"));
        assert_eq!(b.retries, 5);
        assert_eq!(b.registry_map, vec![("a".to_string(), "b".to_string())]);
        let flags = ["--skip-default-registry-fallback", "--push-ignore-immutable-tag-errors"];
        let b = match crate::cli::Cli::try_parse_from(["kiln", "build"].iter().chain(&flags).chain(&["."])).unwrap().command {
            crate::cli::CommandKind::Build(b) => b.registry.to_options().unwrap(),
            _ => unreachable!(),
        };
        assert!(b.skip_default_fallback && b.ignore_immutable_tags);
    }

    #[test]
    fn client_certificates_name_the_flag_and_file() {
        for bad in ["r:5000", "r:5000=/a", "=/a,/b", "r=/a,", "r=/a,/b,/c"] {
            let e = parse_client_cert(bad).unwrap_err().to_string();
            assert!(e.contains("--registry-client-cert") && e.contains("REGISTRY=CERTFILE,KEYFILE"), "{bad}: {e}");
        }
        let e = parse_client_cert("r:5000=/no/such/cert.pem,/no/such/key.pem").unwrap_err().to_string();
        assert!(e.contains("--registry-client-cert") && e.contains("/no/such/cert.pem"), "{e}");
    }
}
