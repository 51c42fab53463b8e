//! What attestations a build attaches: `--sbom`, `--provenance`, `--attest` (BuildKit's
//! and buildx's syntax) and `--attest-style`, parsed into one [`Attestations`].
//!
//! buildx turns `--sbom=VALUE` into `--attest type=sbom,VALUE` (a boolean becomes
//! `disabled=!VALUE`), and so do we; the last request of a type decides its options,
//! except SBOM formats, which add up (`--sbom --attest type=sbom,format=cyclonedx`
//! gives both documents; a request without `format=` asks for SPDX).

/// Set by the parent for the namespaced child when it materialised a git or http(s)
/// context: the URL (without credentials) and the checked-out commit.
pub const CONTEXT_URI_ENV: &str = "_KILN_CONTEXT_URI";
pub const CONTEXT_COMMIT_ENV: &str = "_KILN_CONTEXT_COMMIT";

/// A document format of the SBOM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SbomFormat {
    Spdx,
    CycloneDx,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbomRequest {
    /// Sorted, without duplicates, never empty.
    pub formats: Vec<SbomFormat>,
    /// Also scan the build context (BuildKit's `BUILDKIT_SBOM_SCAN_CONTEXT`).
    pub scan_context: bool,
    /// Also scan the intermediate stages (BuildKit's `BUILDKIT_SBOM_SCAN_STAGE`).
    pub scan_stage: bool,
    /// A failure to make or attach it is a warning, not a failed build.
    pub ignore_error: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvenanceMode {
    Min,
    Max,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenanceRequest {
    pub mode: ProvenanceMode,
    /// `builder-id=URI`: the builder's identity (default: kiln's own URI).
    pub builder_id: Option<String>,
    pub ignore_error: bool,
}

/// Where attestations go in a registry or OCI layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttestStyle {
    /// OCI 1.1 referrers: artifact manifests whose `subject` is the platform
    /// manifest; the image index stays as it is.
    #[default]
    Referrers,
    /// BuildKit's: attestation manifests inside the index (`unknown/unknown`).
    BuildKit,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attestations {
    pub sbom: Option<SbomRequest>,
    pub provenance: Option<ProvenanceRequest>,
    pub style: AttestStyle,
}

impl Attestations {
    pub fn any(&self) -> bool {
        self.sbom.is_some() || self.provenance.is_some()
    }

    /// From `--sbom`, `--provenance`, every `--attest` and `--attest-style`; errors
    /// name the flag and the option.
    pub fn parse(sbom: Option<&str>, provenance: Option<&str>, attest: &[String], style: Option<&str>) -> Result<Self, String> {
        let mut requests: Vec<(String, String)> = Vec::new();
        if let Some(v) = sbom {
            requests.push(("--sbom".into(), shorthand("sbom", v)));
        }
        if let Some(v) = provenance {
            requests.push(("--provenance".into(), shorthand("provenance", v)));
        }
        for a in attest {
            requests.push(("--attest".into(), a.clone()));
        }
        let mut out = Attestations::default();
        let mut formats: Vec<SbomFormat> = Vec::new();
        for (flag, spec) in &requests {
            let fields = fields(spec).map_err(|e| format!("{flag} {spec}: {e}"))?;
            let ty = fields.iter().find(|(k, _)| k == "type").map(|(_, v)| v.as_str());
            match ty {
                Some("sbom") => {
                    let parsed = parse_sbom(&fields).map_err(|e| format!("{flag} {spec}: {e}"))?;
                    match parsed {
                        Some((req, f)) => {
                            formats.extend(f);
                            out.sbom = Some(req);
                        }
                        None => {
                            formats.clear();
                            out.sbom = None;
                        }
                    }
                }
                Some("provenance") => out.provenance = parse_provenance(&fields).map_err(|e| format!("{flag} {spec}: {e}"))?,
                Some(other) => return Err(format!("{flag} {spec}: unknown attestation type {other:?}{}; expected sbom or provenance", did_you_mean(other, &["sbom", "provenance"]))),
                None => return Err(format!("{flag} {spec}: missing type= (type=sbom or type=provenance)")),
            }
        }
        if let Some(s) = &mut out.sbom {
            formats.sort();
            formats.dedup();
            if formats.is_empty() {
                formats.push(SbomFormat::Spdx);
            }
            s.formats = formats;
        }
        out.style = match style {
            None | Some("referrers") | Some("oci") => AttestStyle::Referrers,
            Some("buildkit") => AttestStyle::BuildKit,
            Some(other) => return Err(format!("--attest-style {other:?}: expected referrers or buildkit{}", did_you_mean(other, &["referrers", "buildkit"]))),
        };
        Ok(out)
    }
}

/// buildx's canonical form of `--sbom=V` / `--provenance=V`.
fn shorthand(ty: &str, v: &str) -> String {
    match v.trim() {
        "" | "true" | "1" => format!("type={ty}"),
        "false" | "0" => format!("type={ty},disabled=true"),
        // `--provenance=max` is what people type for mode=max.
        m @ ("min" | "max") if ty == "provenance" => format!("type={ty},mode={m}"),
        rest => format!("type={ty},{rest}"),
    }
}

/// `k=v,k=v` (a value may be quoted to hold a comma).
fn fields(spec: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut parts = Vec::new();
    for c in spec.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    parts.push(cur);
    for p in parts.into_iter().filter(|p| !p.trim().is_empty()) {
        match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => out.push((k.trim().to_string(), v.trim().to_string())),
            _ => return Err(format!("{p:?} is not KEY=VALUE")),
        }
    }
    Ok(out)
}

fn boolean(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" | "True" | "TRUE" => Ok(true),
        "false" | "0" | "False" | "FALSE" => Ok(false),
        _ => Err(format!("{key}={v}: expected true or false")),
    }
}

fn unknown(key: &str, known: &[&str]) -> String {
    format!("unknown option {key:?}{}; known: {}", did_you_mean(key, known), known.join(", "))
}

/// `None`: disabled.
fn parse_sbom(fields: &[(String, String)]) -> Result<Option<(SbomRequest, Vec<SbomFormat>)>, String> {
    const KNOWN: &[&str] = &["type", "disabled", "generator", "format", "scan-context", "scan-stage", "ignore-error"];
    let mut req = SbomRequest { formats: Vec::new(), scan_context: false, scan_stage: false, ignore_error: false };
    let mut formats = Vec::new();
    let mut disabled = false;
    for (k, v) in fields {
        match k.as_str() {
            "type" => {}
            "disabled" => disabled = boolean(k, v)?,
            // kiln scans the rootfs itself; BuildKit's default scanner image is
            // accepted as meaning "the default generator", any other image is not run.
            "generator" => {
                let default_scanner = v.starts_with("docker/buildkit-syft-scanner") || v.starts_with("docker.io/docker/buildkit-syft-scanner");
                if v != "builtin" && !default_scanner {
                    return Err(format!("generator={v}: kiln runs no scanner image; it scans the image itself (generator=builtin)"));
                }
            }
            "format" => formats.push(match v.as_str() {
                "spdx" | "spdx-json" => SbomFormat::Spdx,
                "cyclonedx" | "cyclonedx-json" | "cdx" => SbomFormat::CycloneDx,
                other => return Err(format!("format={other}: expected spdx or cyclonedx{}", did_you_mean(other, &["spdx", "cyclonedx"]))),
            }),
            "scan-context" => req.scan_context = boolean(k, v)?,
            "scan-stage" => req.scan_stage = boolean(k, v)?,
            "ignore-error" => req.ignore_error = boolean(k, v)?,
            other => return Err(unknown(other, KNOWN)),
        }
    }
    // A request without format= asks for the default document (SPDX, as BuildKit's).
    if formats.is_empty() {
        formats.push(SbomFormat::Spdx);
    }
    Ok((!disabled).then_some((req, formats)))
}

fn parse_provenance(fields: &[(String, String)]) -> Result<Option<ProvenanceRequest>, String> {
    const KNOWN: &[&str] = &["type", "disabled", "mode", "builder-id", "version", "ignore-error"];
    let mut req = ProvenanceRequest { mode: ProvenanceMode::Min, builder_id: None, ignore_error: false };
    let mut disabled = false;
    for (k, v) in fields {
        match k.as_str() {
            "type" => {}
            "disabled" => disabled = boolean(k, v)?,
            "mode" => {
                req.mode = match v.as_str() {
                    "min" => ProvenanceMode::Min,
                    "max" => ProvenanceMode::Max,
                    other => return Err(format!("mode={other}: expected min or max")),
                }
            }
            "builder-id" => req.builder_id = Some(v.clone()),
            // BuildKit can still write SLSA v0.2; kiln writes v1 only.
            "version" => {
                if !matches!(v.as_str(), "v1" | "v1.0" | "1") {
                    return Err(format!("version={v}: kiln writes SLSA provenance v1 only (version=v1)"));
                }
            }
            "ignore-error" => req.ignore_error = boolean(k, v)?,
            other => return Err(unknown(other, KNOWN)),
        }
    }
    Ok((!disabled).then_some(req))
}

/// BuildKit's ` (did you mean X?)` hint (frontend's suggest, as for Dockerfile typos).
fn did_you_mean(got: &str, known: &[&str]) -> String {
    kiln_frontend::suggest::did_you_mean(kiln_frontend::suggest::search(got, known.iter().copied(), true).as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sbom: Option<&str>, prov: Option<&str>, attest: &[&str]) -> Result<Attestations, String> {
        Attestations::parse(sbom, prov, &attest.iter().map(|s| s.to_string()).collect::<Vec<_>>(), None)
    }

    #[test]
    fn buildx_shorthands() {
        // (sbom, provenance, attest) → (sbom formats, provenance mode)
        let rows: &[(Option<&str>, Option<&str>, &[&str], Option<Vec<SbomFormat>>, Option<ProvenanceMode>)] = &[
            (Some("true"), None, &[], Some(vec![SbomFormat::Spdx]), None),
            (Some(""), Some("true"), &[], Some(vec![SbomFormat::Spdx]), Some(ProvenanceMode::Min)),
            (Some("false"), Some("mode=max"), &[], None, Some(ProvenanceMode::Max)),
            (None, Some("max"), &[], None, Some(ProvenanceMode::Max)),
            (None, Some("false"), &[], None, None),
            (Some("generator=docker/buildkit-syft-scanner:stable-1"), None, &[], Some(vec![SbomFormat::Spdx]), None),
            (None, None, &["type=sbom,format=cyclonedx", "type=sbom,format=spdx"], Some(vec![SbomFormat::Spdx, SbomFormat::CycloneDx]), None),
            (Some("true"), None, &["type=sbom,format=cyclonedx"], Some(vec![SbomFormat::Spdx, SbomFormat::CycloneDx]), None),
            (None, None, &["type=sbom,format=cyclonedx"], Some(vec![SbomFormat::CycloneDx]), None),
            (None, None, &["type=provenance,mode=max", "type=provenance,disabled=true"], None, None),
            (Some("true"), None, &["type=sbom,disabled=true"], None, None),
        ];
        for (sbom, prov, attest, formats, mode) in rows {
            let a = parse(*sbom, *prov, attest).unwrap_or_else(|e| panic!("{sbom:?} {prov:?} {attest:?}: {e}"));
            assert_eq!(a.sbom.as_ref().map(|s| s.formats.clone()), *formats, "{sbom:?} {prov:?} {attest:?}");
            assert_eq!(a.provenance.as_ref().map(|p| p.mode), *mode, "{sbom:?} {prov:?} {attest:?}");
        }
    }

    #[test]
    fn options_reach_the_request() {
        let a = parse(None, None, &["type=sbom,scan-context=true,scan-stage=true,ignore-error=true", "type=provenance,mode=max,builder-id=https://ci.example/run/1"]).unwrap();
        let s = a.sbom.unwrap();
        assert!(s.scan_context && s.scan_stage && s.ignore_error);
        assert_eq!(a.provenance.unwrap().builder_id.as_deref(), Some("https://ci.example/run/1"));
        let b = Attestations::parse(Some("true"), None, &[], Some("buildkit")).unwrap();
        assert_eq!(b.style, AttestStyle::BuildKit);
    }

    #[test]
    fn bad_input_names_the_flag_and_option() {
        let rows: &[(Option<&str>, Option<&str>, &[&str], Option<&str>, &str)] = &[
            (None, None, &["type=sbom,scan-contxt=true"], None, "--attest type=sbom,scan-contxt=true: unknown option \"scan-contxt\" (did you mean scan-context?)"),
            (None, None, &["type=sbmo"], None, "unknown attestation type \"sbmo\" (did you mean sbom?)"),
            (None, None, &["mode=max"], None, "missing type="),
            (None, Some("mode=maximal"), &[], None, "--provenance type=provenance,mode=maximal: mode=maximal: expected min or max"),
            (Some("generator=anchore/syft"), None, &[], None, "kiln runs no scanner image"),
            (None, Some("version=v0.2"), &[], None, "SLSA provenance v1 only"),
            (Some("format=spdx-tag"), None, &[], None, "format=spdx-tag: expected spdx or cyclonedx"),
            (Some("true"), None, &[], Some("buildkt"), "--attest-style \"buildkt\": expected referrers or buildkit (did you mean buildkit?)"),
            (None, None, &["type=sbom,scan-stage=yes"], None, "scan-stage=yes: expected true or false"),
        ];
        for (sbom, prov, attest, style, want) in rows {
            let e = Attestations::parse(*sbom, *prov, &attest.iter().map(|s| s.to_string()).collect::<Vec<_>>(), *style).unwrap_err();
            assert!(e.contains(want), "{sbom:?} {prov:?} {attest:?}: {e}");
        }
    }
}
