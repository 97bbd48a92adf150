//! Fuzz target logic for plexd, one module per target. The modules are plain functions so
//! that the normal test suite can run them on seeds too (`target/tests/request_props.rs`
//! includes `request_parse.rs` with `#[path]`).

pub mod request_parse;
