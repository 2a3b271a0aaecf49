//! End-to-end tests: the real `warden` binary, a real SQLite file (or a real PostgreSQL server),
//! real HTTP on an ephemeral port.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod harness;

mod bad_input;
mod cluster;
mod crash;
mod federation;
mod governance;
mod migrate;
mod scan;
mod security;
mod sinks;
mod tamper;
mod tokens;
mod tour;
mod vault;
