//! Licence strings as recorded (Debian's DEP-5 short names, Python classifiers,
//! npm `license` fields) turned into SPDX identifiers where they are one, so that
//! documents validate: what is not a known identifier becomes a `LicenseRef-`.

/// SPDX licence identifiers kiln maps to (the ones package records use).
const KNOWN: &[&str] = &[
    "0BSD", "AFL-2.1", "AGPL-3.0-only", "AGPL-3.0-or-later", "Apache-1.1", "Apache-2.0", "Artistic-1.0", "Artistic-2.0",
    "BSD-1-Clause", "BSD-2-Clause", "BSD-3-Clause", "BSD-4-Clause", "BSL-1.0", "CC-BY-3.0", "CC-BY-4.0", "CC-BY-SA-3.0",
    "CC-BY-SA-4.0", "CC0-1.0", "CDDL-1.0", "EPL-1.0", "EPL-2.0", "FSFAP", "FTL", "GFDL-1.2-or-later", "GFDL-1.3-or-later",
    "GPL-1.0-or-later", "GPL-2.0-only", "GPL-2.0-or-later", "GPL-3.0-only", "GPL-3.0-or-later", "ISC", "LGPL-2.0-only",
    "LGPL-2.0-or-later", "LGPL-2.1-only", "LGPL-2.1-or-later", "LGPL-3.0-only", "LGPL-3.0-or-later", "MIT", "MIT-0",
    "MPL-1.1", "MPL-2.0", "OpenSSL", "PSF-2.0", "Python-2.0", "Ruby", "Unicode-DFS-2016", "Unlicense", "Vim", "WTFPL",
    "X11", "Zlib", "curl", "bzip2-1.0.6", "BlueOak-1.0.0", "Unicode-3.0", "OFL-1.1",
];

/// `s` as an SPDX identifier, if it is one or a common spelling of one.
pub fn spdx_id(s: &str) -> Option<&'static str> {
    let t = s.trim();
    if let Some(k) = KNOWN.iter().find(|k| k.eq_ignore_ascii_case(t)) {
        return Some(k);
    }
    let alias = match t.to_ascii_lowercase().as_str() {
        "gpl-2" | "gpl-2.0" | "gplv2" | "gpl2" => "GPL-2.0-only",
        "gpl-2+" | "gpl-2.0+" | "gplv2+" => "GPL-2.0-or-later",
        "gpl-3" | "gpl-3.0" | "gplv3" => "GPL-3.0-only",
        "gpl-3+" | "gpl-3.0+" | "gplv3+" => "GPL-3.0-or-later",
        "gpl" | "gpl-1+" | "gpl+" => "GPL-1.0-or-later",
        "lgpl-2" => "LGPL-2.0-only",
        "lgpl-2+" => "LGPL-2.0-or-later",
        "lgpl-2.1" => "LGPL-2.1-only",
        "lgpl-2.1+" => "LGPL-2.1-or-later",
        "lgpl-3" | "lgpl-3.0" => "LGPL-3.0-only",
        "lgpl-3+" | "lgpl-3.0+" => "LGPL-3.0-or-later",
        "bsd-2-clause" | "bsd-2" => "BSD-2-Clause",
        "bsd-3-clause" | "bsd-3" | "bsd" | "new bsd" => "BSD-3-Clause",
        "bsd-4-clause" => "BSD-4-Clause",
        "apache-2" | "apache 2.0" | "apache2" | "apache license 2.0" | "apache software license" | "apache license, version 2.0" => "Apache-2.0",
        "mit license" | "expat" => "MIT",
        "mpl-2" => "MPL-2.0",
        "psf" | "python software foundation license" => "PSF-2.0",
        "zlib license" => "Zlib",
        "public domain" | "public-domain" => return None,
        _ => return None,
    };
    Some(alias)
}

/// The SPDX identifier of a Python trove classifier (`License :: OSI Approved :: MIT License`).
pub fn from_classifier(c: &str) -> Option<&'static str> {
    let last = c.rsplit("::").next()?.trim();
    Some(match last {
        "MIT License" => "MIT",
        "BSD License" => "BSD-3-Clause",
        "Apache Software License" => "Apache-2.0",
        "ISC License (ISCL)" => "ISC",
        "Python Software Foundation License" => "PSF-2.0",
        "Mozilla Public License 2.0 (MPL 2.0)" => "MPL-2.0",
        "GNU General Public License v2 (GPLv2)" => "GPL-2.0-only",
        "GNU General Public License v3 (GPLv3)" => "GPL-3.0-only",
        "GNU Lesser General Public License v3 (LGPLv3)" => "LGPL-3.0-only",
        "The Unlicense (Unlicense)" => "Unlicense",
        _ => return None,
    })
}

/// An SPDX `LicenseRef-` id for a licence that is not a known identifier: the
/// allowed characters of the text, else a hash.
pub fn license_ref(s: &str) -> String {
    let clean: String = s.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect();
    let clean = clean.trim_matches('-').to_string();
    if clean.is_empty() || clean.len() > 64 {
        use sha2::Digest as _;
        return format!("LicenseRef-{}", &hex::encode(sha2::Sha256::digest(s.as_bytes()))[..16]);
    }
    format!("LicenseRef-{clean}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_spellings() {
        assert_eq!(spdx_id("GPL-2+"), Some("GPL-2.0-or-later"));
        assert_eq!(spdx_id("mit"), Some("MIT"));
        assert_eq!(spdx_id("BSD-3-clause"), Some("BSD-3-Clause"));
        assert_eq!(spdx_id("Expat"), Some("MIT"));
        assert_eq!(spdx_id("public-domain"), None);
        assert_eq!(from_classifier("License :: OSI Approved :: MIT License"), Some("MIT"));
        assert_eq!(license_ref("public-domain"), "LicenseRef-public-domain");
        assert_eq!(license_ref("GPL-2+ with OpenSSL exception"), "LicenseRef-GPL-2--with-OpenSSL-exception");
    }
}
