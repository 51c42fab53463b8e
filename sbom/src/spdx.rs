//! SPDX 2.3 JSON. The image is the described package (DESCRIBES), containing the
//! operating system and every package found (CONTAINS). A package's owned regular
//! files are File elements with their SHA-1 (SPDX requires one), the package then
//! `filesAnalyzed: true` with the verification code computed from them, as the spec
//! defines it; a package without such files is `filesAnalyzed: false`.
//!
//! Identifiers and the namespace are derived from content, so the same inventory and
//! subject give the same bytes. A licence that is not a known SPDX identifier becomes
//! a `LicenseRef-` with its text in `hasExtractedLicensingInfos`.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sha2::Digest as _;

use crate::{DocumentInfo, Ecosystem, Inventory, Package};

fn short_hash(parts: &[&str]) -> String {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())[..16].to_string()
}

fn id_safe(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect()
}

pub fn ecosystem_name(e: Ecosystem) -> &'static str {
    match e {
        Ecosystem::Deb => "deb",
        Ecosystem::Apk => "apk",
        Ecosystem::Rpm => "rpm",
        Ecosystem::Python => "python",
        Ecosystem::Npm => "npm",
        Ecosystem::Go => "go",
        Ecosystem::Cargo => "cargo",
        Ecosystem::Maven => "java",
    }
}

/// The image's own purl: `pkg:oci/NAME@DIGEST?repository_url=...&platform=...`.
pub fn image_purl(doc: &DocumentInfo) -> Option<String> {
    let digest = doc.subject.digest.as_deref()?;
    let name = doc.subject.name.split(" (").next().unwrap_or(&doc.subject.name);
    let repo = name.split('@').next().unwrap_or(name);
    let repo = match repo.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => repo,
    };
    let last = repo.rsplit('/').next().unwrap_or(repo);
    Some(crate::purl::purl("oci", None, last, digest, &[("platform", doc.subject.platform.clone()), ("repository_url", repo.to_string())]))
}

/// The licence expression of `p`, collecting the `LicenseRef-`s it needs.
fn declared(p: &Package, refs: &mut BTreeMap<String, String>) -> String {
    let mut ids: Vec<String> = Vec::new();
    for l in &p.licenses {
        let id = match crate::license::spdx_id(l) {
            Some(id) => id.to_string(),
            None => {
                let r = crate::license::license_ref(l);
                refs.entry(r.clone()).or_insert_with(|| l.clone());
                r
            }
        };
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    match ids.len() {
        0 => "NOASSERTION".into(),
        1 => ids.remove(0),
        _ => ids.join(" AND "),
    }
}

/// `Name <mail>` (dpkg, npm) as SPDX's `Person: Name (mail)`.
fn supplier(s: &str) -> String {
    let clean: String = s.chars().filter(|c| !matches!(c, '(' | ')' | '\n')).collect();
    match clean.split_once('<') {
        Some((name, rest)) => format!("Person: {} ({})", name.trim(), rest.trim_end_matches('>').trim()),
        None => format!("Person: {}", clean.trim()),
    }
}

fn purpose(e: Ecosystem) -> &'static str {
    match e {
        Ecosystem::Go | Ecosystem::Cargo | Ecosystem::Maven | Ecosystem::Python | Ecosystem::Npm => "LIBRARY",
        Ecosystem::Deb | Ecosystem::Apk | Ecosystem::Rpm => "INSTALL",
    }
}

/// One package element, its File elements and relationships.
fn package_element(inv: &Inventory, p: &Package, refs: &mut BTreeMap<String, String>, files: &mut Vec<Value>, rels: &mut Vec<Value>) -> Value {
    let id = format!("SPDXRef-Package-{}-{}-{}", ecosystem_name(p.ecosystem), id_safe(&p.name), short_hash(&[&p.purl, &p.found_at]));
    let owned: Vec<(&String, &String)> = p.files.iter().filter_map(|f| inv.checksums.get(f).map(|c| (f, c))).collect();
    let mut v = json!({
        "SPDXID": id,
        "name": p.name,
        "versionInfo": p.version,
        "downloadLocation": "NOASSERTION",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": declared(p, refs),
        "copyrightText": "NOASSERTION",
        "supplier": p.supplier.as_deref().map(supplier).unwrap_or_else(|| "NOASSERTION".into()),
        "primaryPackagePurpose": purpose(p.ecosystem),
        "sourceInfo": format!("acquired package info from {}", p.found_at),
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": p.purl}],
        "filesAnalyzed": !owned.is_empty(),
    });
    if !owned.is_empty() {
        let mut sums: Vec<&str> = owned.iter().map(|(_, c)| c.as_str()).collect();
        sums.sort_unstable();
        let code = hex::encode(<sha1::Sha1 as sha1::Digest>::digest(sums.concat().as_bytes()));
        v["packageVerificationCode"] = json!({"packageVerificationCodeValue": code});
        for (f, sum) in owned {
            let fid = format!("SPDXRef-File-{}", short_hash(&[&id, f]));
            files.push(json!({"SPDXID": fid, "fileName": format!(".{f}"), "checksums": [{"algorithm": "SHA1", "checksumValue": sum}],
                "licenseConcluded": "NOASSERTION", "copyrightText": "NOASSERTION"}));
            rels.push(json!({"spdxElementId": id, "relationshipType": "CONTAINS", "relatedSpdxElement": fid}));
        }
    }
    if let Some(a) = &p.arch {
        v["comment"] = json!(format!("architecture {a}"));
    }
    v
}

pub fn write(inv: &Inventory, doc: &DocumentInfo) -> Vec<u8> {
    let mut refs: BTreeMap<String, String> = BTreeMap::new();
    let mut packages = Vec::new();
    let mut files = Vec::new();
    let mut rels = vec![json!({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": "SPDXRef-Image"})];
    let mut image = json!({
        "SPDXID": "SPDXRef-Image",
        "name": doc.subject.name,
        "versionInfo": doc.subject.digest.clone().unwrap_or_default(),
        "downloadLocation": "NOASSERTION",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "comment": format!("platform {}", doc.subject.platform),
    });
    if let Some(p) = image_purl(doc) {
        image["externalRefs"] = json!([{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": p}]);
    }
    packages.push(image);
    if let Some(d) = &inv.distro {
        packages.push(json!({
            "SPDXID": "SPDXRef-OperatingSystem", "name": d.id, "versionInfo": d.version_id, "downloadLocation": "NOASSERTION",
            "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION", "copyrightText": "NOASSERTION",
            "filesAnalyzed": false, "primaryPackagePurpose": "OPERATING-SYSTEM", "comment": d.pretty_name,
        }));
        rels.push(json!({"spdxElementId": "SPDXRef-Image", "relationshipType": "CONTAINS", "relatedSpdxElement": "SPDXRef-OperatingSystem"}));
    }
    for p in &inv.packages {
        let v = package_element(inv, p, &mut refs, &mut files, &mut rels);
        rels.push(json!({"spdxElementId": "SPDXRef-Image", "relationshipType": "CONTAINS", "relatedSpdxElement": v["SPDXID"]}));
        packages.push(v);
    }
    let purls: Vec<&str> = inv.packages.iter().map(|p| p.purl.as_str()).collect();
    let ns = short_hash(&[&doc.subject.name, doc.subject.digest.as_deref().unwrap_or(""), &doc.subject.platform, &purls.join("\n")]);
    let mut out = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{} {}", doc.subject.name, doc.subject.platform),
        "documentNamespace": format!("https://kiln.dev/spdx/{}-{ns}", id_safe(&doc.subject.name)),
        "creationInfo": {"created": doc.created, "creators": [format!("Tool: {}", doc.tool)], "licenseListVersion": "3.23"},
        "packages": packages,
        "relationships": rels,
    });
    if !files.is_empty() {
        out["files"] = Value::Array(files);
    }
    if !refs.is_empty() {
        out["hasExtractedLicensingInfos"] = refs.iter().map(|(id, text)| json!({"licenseId": id, "extractedText": text, "name": text})).collect();
    }
    serde_json::to_vec(&out).unwrap_or_default()
}
