//! The build context as steps see it: `.dockerignore`, source selection and
//! content digests, and the digest of what a step reads from another stage.

pub mod dockerignore;
pub mod hasher;
pub mod select;
pub mod stagecontent;
pub mod view;

#[cfg(test)]
mod fuzz_ignore;
