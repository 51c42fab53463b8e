//! Percent-encoding of everything but RFC 3986's unreserved characters
//! (`A-Z a-z 0-9 - . _ ~`): what package URLs and OAuth2 form bodies both need.

pub fn encode_unreserved(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn unreserved_stay() {
        assert_eq!(super::encode_unreserved("a-b.c_d~e f+g:h/@"), "a-b.c_d~e%20f%2Bg%3Ah%2F%40");
    }
}
