//! Dockerfile parsing and lowering. Does no I/O.
