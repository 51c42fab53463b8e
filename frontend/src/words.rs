//! Small tokenizers shared by the parser: whitespace splitting, BuildKit's quote-aware
//! word splitting (quotes kept, for later expansion), and the JSON exec form.
//!
//! They are deliberately separate from variable expansion: Docker first splits an
//! instruction into words, then expands each word on its own, so `COPY $A /x` with
//! `A="a b"` copies one file named `a b`.

/// Split on ASCII whitespace (what BuildKit does for COPY/ADD/VOLUME/EXPOSE args).
pub fn split_ws(s: &str) -> Vec<String> {
    s.split([' ', '\t', '\x0b', '\x0c', '\r', '\n']).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

/// Split on whitespace outside quotes, keeping the quotes and escapes in the words.
/// This is BuildKit's `parseWords`, used for ENV/LABEL/ARG `k=v` lists.
pub fn parse_words(s: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match quote {
            None if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                word.push(c);
            }
            Some(q) if c == q => {
                quote = None;
                word.push(c);
            }
            _ if c == escape && quote != Some('\'') => {
                word.push(c);
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            _ => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// The exec (JSON) form: a JSON array of strings. Anything else is `None`, and the
/// caller falls back to the shell form as Docker does.
pub fn parse_json_array(s: &str) -> Option<Vec<String>> {
    let t = s.trim();
    if !t.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(t).ok()
}

/// A valid JSON array with a non-string element: BuildKit rejects it rather than
/// falling back to the shell form.
pub fn json_not_strings(s: &str) -> bool {
    let t = s.trim();
    t.starts_with('[')
        && serde_json::from_str::<Vec<serde_json::Value>>(t).is_ok_and(|v| v.iter().any(|x| !x.is_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_quotes() {
        assert_eq!(parse_words(r#"a="b c" d='e f' g=h\ i"#, '\\'), vec![r#"a="b c""#, "d='e f'", r"g=h\ i"]);
        assert_eq!(split_ws("  a\tb  c "), vec!["a", "b", "c"]);
        assert_eq!(parse_json_array(r#"["a", "b"]"#), Some(vec!["a".into(), "b".into()]));
        assert_eq!(parse_json_array(r#"["a", 1]"#), None);
        assert_eq!(parse_json_array("[oops"), None);
        assert!(json_not_strings(r#"["a", 1]"#));
        assert!(!json_not_strings(r#"["a"]"#));
        assert!(!json_not_strings("[oops"));
    }
}
