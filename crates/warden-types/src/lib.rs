//! Warden's wire types and domain vocabulary.
//!
//! Everything here is plain data: the enums that name the domain (kinds, statuses, roles), the
//! records the API returns, the requests it accepts (all `deny_unknown_fields`), and the stable
//! error codes of [`ErrorCode`]. The domain crate uses these records as its own, so the wire and the
//! domain cannot drift apart; logic lives in `warden-core`.

mod error;
#[macro_use]
mod model;
mod federation;
mod governance;
mod oauth;
mod requests;
mod vault;

pub use error::{ErrorCode, Problem};
pub use federation::*;
pub use governance::*;
pub use model::*;
pub use oauth::*;
pub use requests::*;
pub use vault::*;

/// RFC 3339 (de)serialisation for optional timestamps, shared by every record.
pub mod rfc3339_opt {
    pub use time::serde::rfc3339::option::{deserialize, serialize};
}
