//! Go formatting helpers, because image history (`created_by`) is written by BuildKit
//! with Go's `%q`/`%v` verbs and `time.Duration`'s String, and matching it keeps kiln's
//! images looking like BuildKit's. Also Go's `time.ParseDuration` for HEALTHCHECK.

/// Go `strconv.Quote`.
pub fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go `%q` of a `[]string`: `["a" "b"]`.
pub fn quote_slice(v: &[String]) -> String {
    let parts: Vec<String> = v.iter().map(|s| quote(s)).collect();
    format!("[{}]", parts.join(" "))
}

/// Go `time.Duration.String()`.
pub fn duration(d: i64) -> String {
    if d == 0 {
        return "0s".into();
    }
    let sign = if d < 0 { "-" } else { "" };
    let u = d.unsigned_abs();
    let frac = |v: u64, div: u64| -> String {
        let int = v / div;
        let rem = v % div;
        if rem == 0 {
            return int.to_string();
        }
        let width = div.to_string().len() - 1;
        let f = format!("{rem:0width$}");
        format!("{int}.{}", f.trim_end_matches('0'))
    };
    if u < 1_000_000_000 {
        let (unit, div) = if u < 1_000 {
            ("ns", 1)
        } else if u < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{unit}", frac(u, div));
    }
    let secs = u / 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let mut out = sign.to_string();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&frac(s * 1_000_000_000 + u % 1_000_000_000, 1_000_000_000));
    out.push('s');
    out
}

/// Go `time.ParseDuration`: `1h30m`, `1.5s`, `300ms`, `-2us`, `0`.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let bad = || format!("time: invalid duration {}", quote(s));
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let fl = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            frac_part = &r[..fl];
            rest = &r[fl..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        let ul = rest.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(rest.len());
        let unit: i128 = match &rest[..ul] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("time: missing unit in duration {}", quote(s))),
            u => return Err(format!("time: unknown unit {} in duration {}", quote(u), quote(s))),
        };
        rest = &rest[ul..];
        let too_big = || format!("time: invalid duration {}", quote(s));
        let iv: i128 = if int_part.is_empty() { 0 } else { int_part.parse::<i128>().map_err(|_| too_big())? };
        let mut v = iv.checked_mul(unit).ok_or_else(too_big)?;
        let mut scale = unit;
        for d in frac_part.chars().take(30) {
            scale /= 10;
            if scale == 0 {
                break;
            }
            v += i128::from(d as u8 - b'0') * scale;
        }
        total = total.checked_add(v).ok_or_else(too_big)?;
        if total > i64::MAX as i128 {
            return Err(too_big());
        }
    }
    let t = total as i64;
    Ok(if neg { -t } else { t })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_forms() {
        assert_eq!(quote_slice(&["cat".into(), "/a \"b\"".into()]), r#"["cat" "/a \"b\""]"#);
        for (ns, s) in [
            (0, "0s"),
            (30_000_000_000, "30s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (1_500_000_000, "1.5s"),
            (500_000_000, "500ms"),
            (1_500, "1.5µs"),
            (7, "7ns"),
        ] {
            assert_eq!(duration(ns), s);
            assert_eq!(parse_duration(s), Ok(ns), "{s}");
        }
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_duration(".5s"), Ok(500_000_000));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }
}
