//! Warden's domain: identities, credentials, lifecycle, approvals and the audit chain.
//!
//! This crate does no I/O. It declares the ports it needs ([`ports::Store`], [`clock::Clock`]) and
//! implements the use cases over them in [`registry::Registry`]. Adapters (SQLite, PostgreSQL, the
//! HTTP server) depend on it, never the reverse.

pub mod actor;
pub mod anomaly;
pub mod audit;
pub mod clock;
pub mod condition;
pub mod cron;
pub mod error;
pub mod lifecycle;
pub mod policy;
pub mod ports;
pub mod registry;
pub mod scope;
pub mod validate;

pub use actor::{Actor, Principal};
pub use clock::{Clock, FakeClock, SystemClock};
pub use error::{CoreError, StoreError};
pub use policy::Policy;
pub use registry::Registry;
