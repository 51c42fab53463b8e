//! CycloneDX 1.6 JSON: the image as `metadata.component` (type `container`), the
//! operating system and every package as components (with purl, licences, and the
//! files a package owns as `evidence.occurrences`), the image depending on them.
//! The serial number is a UUID derived from the content: same input, same bytes.

use serde_json::{json, Value};
use sha2::Digest as _;

use crate::{DocumentInfo, Inventory, Package};

fn uuid_of(parts: &[&str]) -> String {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let mut b: [u8; 16] = h.finalize()[..16].try_into().unwrap_or([0; 16]);
    // RFC 9562 version 8 (custom), variant 10.
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..])
}

fn licenses(p: &Package) -> Value {
    let out: Vec<Value> = p
        .licenses
        .iter()
        .map(|l| match crate::license::spdx_id(l) {
            Some(id) => json!({"license": {"id": id}}),
            None => json!({"license": {"name": l}}),
        })
        .collect();
    Value::Array(out)
}

fn component(p: &Package) -> Value {
    let mut c = json!({
        "type": "library",
        "bom-ref": format!("{}#{}", p.purl, p.found_at),
        "name": p.name,
        "version": p.version,
        "purl": p.purl,
        "properties": [{"name": "kiln:package:found-at", "value": p.found_at}, {"name": "kiln:package:type", "value": crate::spdx::ecosystem_name(p.ecosystem)}],
    });
    let l = licenses(p);
    if l.as_array().is_some_and(|a| !a.is_empty()) {
        c["licenses"] = l;
    }
    if let Some(s) = &p.supplier {
        c["publisher"] = json!(s);
    }
    if !p.files.is_empty() {
        c["evidence"] = json!({"occurrences": p.files.iter().map(|f| json!({"location": f})).collect::<Vec<_>>()});
    }
    c
}

pub fn write(inv: &Inventory, doc: &DocumentInfo) -> Vec<u8> {
    let image_ref = "image";
    let mut image = json!({"type": "container", "bom-ref": image_ref, "name": doc.subject.name,
        "properties": [{"name": "kiln:image:platform", "value": doc.subject.platform}]});
    if let Some(d) = &doc.subject.digest {
        image["version"] = json!(d);
    }
    if let Some(p) = crate::spdx::image_purl(doc) {
        image["purl"] = json!(p);
    }
    let mut components: Vec<Value> = Vec::new();
    if let Some(d) = &inv.distro {
        components.push(json!({"type": "operating-system", "bom-ref": format!("os:{}", d.id), "name": d.id, "version": d.version_id, "description": d.pretty_name}));
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in &inv.packages {
        let c = component(p);
        // bom-refs must be unique: a package recorded twice at one place is listed once.
        if seen.insert(c["bom-ref"].as_str().unwrap_or_default().to_string()) {
            components.push(c);
        }
    }
    let refs: Vec<Value> = components.iter().map(|c| c["bom-ref"].clone()).collect();
    let purls: Vec<&str> = inv.packages.iter().map(|p| p.purl.as_str()).collect();
    let serial = uuid_of(&[&doc.subject.name, doc.subject.digest.as_deref().unwrap_or(""), &doc.subject.platform, &purls.join("\n")]);
    let (tool_name, tool_version) = doc.tool.split_once('-').unwrap_or((&doc.tool, ""));
    let bom = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{serial}"),
        "version": 1,
        "metadata": {
            "timestamp": doc.created,
            "tools": {"components": [{"type": "application", "name": tool_name, "version": tool_version}]},
            "component": image,
        },
        "components": components,
        "dependencies": [{"ref": image_ref, "dependsOn": refs}],
    });
    serde_json::to_vec(&bom).unwrap_or_default()
}
