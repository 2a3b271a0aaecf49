//! Lifecycle and expiry rules, as pure functions over time.

use time::{Duration, OffsetDateTime};
use warden_types::{Credential, CredentialKind, Identity, IdentityStatus};

use crate::error::CoreError;
use crate::policy::Policy;

/// A lifecycle action an operator can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Activate,
    Suspend,
    Resume,
    Retire,
}

impl Transition {
    pub fn verb(self) -> &'static str {
        match self {
            Transition::Activate => "activate",
            Transition::Suspend => "suspend",
            Transition::Resume => "resume",
            Transition::Retire => "retire",
        }
    }
}

/// `pending_approval → active ⇄ suspended → retired`; retired is terminal, and retire is allowed
/// from any non-retired state.
pub fn next_status(from: IdentityStatus, t: Transition) -> Result<IdentityStatus, CoreError> {
    use IdentityStatus::*;
    let to = match (from, t) {
        (PendingApproval, Transition::Activate) => Active,
        (Active, Transition::Suspend) => Suspended,
        (Suspended, Transition::Resume) => Active,
        (PendingApproval | Active | Suspended, Transition::Retire) => Retired,
        _ => {
            return Err(CoreError::InvalidState(format!(
                "cannot {} an identity that is {from}",
                t.verb()
            )));
        }
    };
    Ok(to)
}

/// The expiry of a new credential: `now + ttl`, where `ttl` defaults to and may not exceed the
/// kind's maximum, and never later than the identity's own expiry.
pub fn credential_expiry(
    policy: &Policy,
    kind: CredentialKind,
    now: OffsetDateTime,
    ttl_seconds: Option<u64>,
    identity_expires: Option<OffsetDateTime>,
) -> Result<OffsetDateTime, CoreError> {
    let max = policy.max_ttl(kind);
    let ttl = match ttl_seconds {
        None => max,
        Some(0) => return Err(CoreError::field("ttl_seconds", "must be greater than zero")),
        Some(s) => i64::try_from(s)
            .ok()
            .map(Duration::seconds)
            .filter(|d| *d <= max)
            .ok_or_else(|| {
                CoreError::TtlTooLong(format!(
                    "ttl {s}s exceeds the maximum for {kind} ({}s)",
                    max.whole_seconds()
                ))
            })?,
    };
    let exp = now
        .checked_add(ttl)
        .ok_or_else(|| CoreError::TtlTooLong("the expiry would be out of range".into()))?;
    Ok(match identity_expires {
        Some(limit) if limit < exp => limit,
        _ => exp,
    })
}

/// The old credential's new expiry after rotation: it stays valid for `overlap`, never longer than
/// it would have anyway.
pub fn overlap_expiry(
    now: OffsetDateTime,
    old_expires: OffsetDateTime,
    overlap: Duration,
) -> OffsetDateTime {
    std::cmp::min(old_expires, now + overlap)
}

/// Why a credential does not authenticate right now, or `Ok`.
pub fn check_usable(
    credential: &Credential,
    identity: &Identity,
    now: OffsetDateTime,
) -> Result<(), &'static str> {
    if credential.revoked_at.is_some() {
        return Err("credential revoked");
    }
    if credential.expires_at <= now {
        return Err("credential expired");
    }
    if identity.status != IdentityStatus::Active {
        return Err(match identity.status {
            IdentityStatus::PendingApproval => "identity pending approval",
            IdentityStatus::Suspended => "identity suspended",
            _ => "identity retired",
        });
    }
    if identity.expires_at.is_some_and(|e| e <= now) {
        return Err("identity expired");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn lifecycle_graph() {
        use IdentityStatus::*;
        assert_eq!(
            next_status(PendingApproval, Transition::Activate).unwrap(),
            Active
        );
        assert_eq!(next_status(Active, Transition::Suspend).unwrap(), Suspended);
        assert_eq!(next_status(Suspended, Transition::Resume).unwrap(), Active);
        for s in [PendingApproval, Active, Suspended] {
            assert_eq!(next_status(s, Transition::Retire).unwrap(), Retired);
        }
        for t in [
            Transition::Activate,
            Transition::Suspend,
            Transition::Resume,
            Transition::Retire,
        ] {
            assert!(next_status(Retired, t).is_err(), "retired is terminal");
        }
        assert!(next_status(Active, Transition::Resume).is_err());
        assert!(next_status(Suspended, Transition::Suspend).is_err());
        assert!(next_status(PendingApproval, Transition::Suspend).is_err());
    }

    #[test]
    fn ttl_defaults_to_and_is_capped_by_the_kind_maximum() {
        let p = Policy::default();
        let now = datetime!(2026-01-01 00:00 UTC);
        let exp = credential_expiry(&p, CredentialKind::ApiKey, now, None, None).unwrap();
        assert_eq!(exp, now + Duration::days(90));
        let exp =
            credential_expiry(&p, CredentialKind::ApiKey, now, Some(30 * 86400), None).unwrap();
        assert_eq!(exp, now + Duration::days(30));
        let err = credential_expiry(&p, CredentialKind::ApiKey, now, Some(91 * 86400), None);
        assert!(matches!(err, Err(CoreError::TtlTooLong(_))));
        let ok = credential_expiry(&p, CredentialKind::PublicKey, now, Some(365 * 86400), None);
        assert!(ok.is_ok());
        assert!(credential_expiry(&p, CredentialKind::ApiKey, now, Some(0), None).is_err());
        assert!(credential_expiry(&p, CredentialKind::ApiKey, now, Some(u64::MAX), None).is_err());
    }

    #[test]
    fn credential_never_outlives_its_identity() {
        let p = Policy::default();
        let now = datetime!(2026-01-01 00:00 UTC);
        let id_exp = now + Duration::days(7);
        let exp = credential_expiry(&p, CredentialKind::ApiKey, now, None, Some(id_exp)).unwrap();
        assert_eq!(exp, id_exp);
    }

    #[test]
    fn overlap_never_extends_a_credential() {
        let now = datetime!(2026-01-01 00:00 UTC);
        let old = now + Duration::days(10);
        assert_eq!(
            overlap_expiry(now, old, Duration::hours(24)),
            now + Duration::hours(24)
        );
        let soon = now + Duration::hours(1);
        assert_eq!(overlap_expiry(now, soon, Duration::hours(24)), soon);
    }
}
