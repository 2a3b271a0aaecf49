//! Who is acting, from where.

use uuid::Uuid;
use warden_types::OperatorRole;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Operator {
        id: Uuid,
        name: String,
        role: OperatorRole,
        teams: Vec<Uuid>,
    },
    /// An NHI authenticated with an API key (`credential_id`) or an access token
    /// (`token_scopes`).
    Identity {
        id: Uuid,
        name: String,
        credential_id: Option<Uuid>,
        token_scopes: Option<Vec<String>>,
    },
    /// Warden itself (background jobs, bootstrap).
    System,
    /// Nobody authenticated (used only to record failed attempts).
    Anonymous,
}

/// A principal plus the request it acts through; every audit event takes these.
#[derive(Debug, Clone)]
pub struct Actor {
    pub principal: Principal,
    pub request_id: String,
    pub source: String,
}

impl Actor {
    pub fn system(request_id: impl Into<String>) -> Self {
        Actor {
            principal: Principal::System,
            request_id: request_id.into(),
            source: "local".into(),
        }
    }

    /// How the actor appears in audit events: `operator:<name>`, `identity:<id>`, `system`.
    pub fn label(&self) -> String {
        match &self.principal {
            Principal::Operator { name, .. } => format!("operator:{name}"),
            Principal::Identity { id, .. } => format!("identity:{id}"),
            Principal::System => "system".into(),
            Principal::Anonymous => "anonymous".into(),
        }
    }

    pub fn operator_id(&self) -> Option<Uuid> {
        match &self.principal {
            Principal::Operator { id, .. } => Some(*id),
            _ => None,
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(
            &self.principal,
            Principal::Operator {
                role: OperatorRole::Admin,
                ..
            } | Principal::System
        )
    }

    /// May read the inventory of `team`: admins and auditors everywhere, members in their teams.
    pub fn can_read_team(&self, team: Uuid) -> bool {
        match &self.principal {
            Principal::System => true,
            Principal::Operator { role, teams, .. } => match role {
                OperatorRole::Admin | OperatorRole::Auditor => true,
                OperatorRole::Member => teams.contains(&team),
            },
            _ => false,
        }
    }

    /// May change the NHIs of `team`: admins everywhere, members in their teams; auditors never.
    pub fn can_manage_team(&self, team: Uuid) -> bool {
        match &self.principal {
            Principal::System => true,
            Principal::Operator { role, teams, .. } => match role {
                OperatorRole::Admin => true,
                OperatorRole::Member => teams.contains(&team),
                OperatorRole::Auditor => false,
            },
            _ => false,
        }
    }

    /// Teams whose inventory this actor is limited to; `None` means every team.
    pub fn visible_teams(&self) -> Option<Vec<Uuid>> {
        match &self.principal {
            Principal::Operator {
                role: OperatorRole::Member,
                teams,
                ..
            } => Some(teams.clone()),
            Principal::Operator { .. } | Principal::System => None,
            _ => Some(Vec::new()),
        }
    }

    /// An NHI acting on itself with an access token that carries `scope` (`warden:read`,
    /// `warden:credentials`): machines manage what they own without an operator token. API keys
    /// carry no scopes and grant nothing here.
    pub fn acts_on_self(&self, identity: Uuid, scope: &str) -> bool {
        match &self.principal {
            Principal::Identity {
                id,
                token_scopes: Some(scopes),
                ..
            } => {
                *id == identity
                    && scopes.iter().any(|s| crate::scope::covers(s, scope))
                    && scope.starts_with("warden:")
            }
            _ => false,
        }
    }

    /// Auditors and admins may read the audit log and operator list.
    pub fn can_read_audit(&self) -> bool {
        matches!(
            &self.principal,
            Principal::Operator {
                role: OperatorRole::Admin | OperatorRole::Auditor,
                ..
            } | Principal::System
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(role: OperatorRole, teams: Vec<Uuid>) -> Actor {
        Actor {
            principal: Principal::Operator {
                id: Uuid::nil(),
                name: "x".into(),
                role,
                teams,
            },
            request_id: "r".into(),
            source: "s".into(),
        }
    }

    #[test]
    fn members_manage_only_their_teams_and_auditors_nothing() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let member = op(OperatorRole::Member, vec![a]);
        assert!(member.can_manage_team(a));
        assert!(!member.can_manage_team(b));
        assert!(!member.can_read_team(b));
        assert!(!member.can_read_audit());
        let auditor = op(OperatorRole::Auditor, vec![]);
        assert!(auditor.can_read_team(b));
        assert!(!auditor.can_manage_team(b));
        assert!(auditor.can_read_audit());
        assert!(!auditor.is_admin());
        let admin = op(OperatorRole::Admin, vec![]);
        assert!(admin.can_manage_team(b) && admin.is_admin());
        assert_eq!(member.visible_teams(), Some(vec![a]));
        assert_eq!(admin.visible_teams(), None);
    }
}
