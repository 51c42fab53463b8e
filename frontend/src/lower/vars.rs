//! A stage's ENV while lowering: values in first-declaration order (the order the
//! image config keeps) with a name index, shared by reference.
//!
//! Why not a plain list: every instruction looks names up in the environment as it
//! was before the instruction, and copying or scanning the whole list for each made
//! lowering quadratic (issue 19: 20,000 ENV lines took 73 s). A snapshot is now an
//! `Rc` clone, a lookup a hash probe, and an ENV changes the shared list in place
//! once the instruction's snapshot is dropped.

use std::collections::HashMap;

#[derive(Debug, Clone, Default)]
pub(super) struct Vars {
    list: Vec<(String, String)>,
    pos: HashMap<String, usize>,
}

impl Vars {
    pub(super) fn from_list(list: Vec<(String, String)>) -> Vars {
        let mut v = Vars::default();
        for (k, val) in list {
            v.set(&k, val);
        }
        v
    }

    pub(super) fn get(&self, k: &str) -> Option<&str> {
        self.pos.get(k).map(|&i| self.list[i].1.as_str())
    }

    pub(super) fn contains(&self, k: &str) -> bool {
        self.pos.contains_key(k)
    }

    /// Insert or replace, keeping first-declaration order.
    pub(super) fn set(&mut self, k: &str, v: String) {
        match self.pos.get(k) {
            Some(&i) => self.list[i].1 = v,
            None => {
                self.pos.insert(k.to_string(), self.list.len());
                self.list.push((k.to_string(), v));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Vars;

    #[test]
    fn replacing_keeps_the_first_position() {
        let mut v = Vars::from_list(vec![("A".into(), "1".into()), ("B".into(), "2".into()), ("A".into(), "3".into())]);
        v.set("C", "4".into());
        v.set("B", "5".into());
        assert_eq!(v.get("A"), Some("3"));
        assert_eq!(v.get("B"), Some("5"));
        assert!(v.contains("C") && !v.contains("D"));
        assert_eq!(v.list, [("A".into(), "3".into()), ("B".into(), "5".into()), ("C".into(), "4".into())]);
    }
}
