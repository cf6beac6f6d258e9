//! End-to-end tests across spool's crates live in `tests/tests/`.
