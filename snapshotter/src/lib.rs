//! Layer tars in and out.
