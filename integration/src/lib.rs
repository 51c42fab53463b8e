//! Test harness for kiln end-to-end tests.
