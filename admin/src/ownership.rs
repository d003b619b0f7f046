//! Who owns a proxy, and who may see and change it.
//!
//! An API token may belong to a team (`team`, set when an admin creates
//! it). A proxy belongs to the team of the token that created it, or to
//! that token itself when it has no team; its keys, policy attachments and
//! deployments belong to it. Admin tokens see and change everything and
//! reassign owners (`PUT /proxies/{id}/owner`); a developer token sees and
//! changes only the proxies its team (or, without a team, the token
//! itself) owns. Another owner's proxy answers 404, exactly like a proxy
//! that does not exist, so ids and names of other teams' proxies do not
//! leak; the refusal is written to the audit log as `access.denied`.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{Any, Row};

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::db::{audit, bump};
use crate::error::{ApiError, ApiResult, Body};

/// The owner of a proxy: `{"team": "payments"}` or `{"token": "tok_..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Owner {
    Team(String),
    /// An API token id: the proxy's creator had no team.
    Token(String),
}

impl Owner {
    /// The stored form: (`owner_team`, `owner_token`).
    pub fn columns(&self) -> (Option<String>, Option<String>) {
        match self {
            Owner::Team(t) => (Some(t.clone()), None),
            Owner::Token(t) => (None, Some(t.clone())),
        }
    }

    /// From the stored columns; `None` for a proxy nobody owns (made
    /// before ownership existed).
    pub fn from_columns(team: Option<String>, token: Option<String>) -> Option<Owner> {
        match (team, token) {
            (Some(t), _) => Some(Owner::Team(t)),
            (None, Some(t)) => Some(Owner::Token(t)),
            (None, None) => None,
        }
    }

    /// Reads `owner_team` and `owner_token` of a row.
    pub fn from_row(r: &sqlx::any::AnyRow) -> ApiResult<Option<Owner>> {
        Ok(Owner::from_columns(
            r.try_get("owner_team")?,
            r.try_get("owner_token")?,
        ))
    }
}

/// Team names: 1 to 64 lowercase letters, digits and hyphens, starting
/// with a letter or digit.
pub fn valid_team(team: &str) -> bool {
    (1..=64).contains(&team.len())
        && !team.starts_with('-')
        && team
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Caller {
    /// The owner of what this caller creates.
    pub fn owner(&self) -> Owner {
        match &self.team {
            Some(t) => Owner::Team(t.clone()),
            None => Owner::Token(self.token_id.clone()),
        }
    }

    /// Whether the caller may see and change a proxy owned by `owner`.
    pub fn may_access(&self, owner: Option<&Owner>) -> bool {
        if self.role == Role::Admin {
            return true;
        }
        match owner {
            Some(Owner::Team(t)) => self.team.as_deref() == Some(t.as_str()),
            Some(Owner::Token(t)) => *t == self.token_id,
            None => false,
        }
    }

    /// A SQL condition on `proxies` (aliased `p`) selecting the proxies the
    /// caller may see, and the value it binds as `$n`; `None` for admins.
    pub fn visible_proxies(&self, n: usize) -> Option<(String, String)> {
        if self.role == Role::Admin {
            return None;
        }
        Some(match &self.team {
            Some(t) => (format!("p.owner_team = ${n}"), t.clone()),
            None => (
                format!("p.owner_team IS NULL AND p.owner_token = ${n}"),
                self.token_id.clone(),
            ),
        })
    }
}

/// The owner of proxy `id`: `None` if there is no such proxy, `Some(None)`
/// if nobody owns it.
pub async fn load_owner<'e, E>(exec: E, id: &str) -> ApiResult<Option<Option<Owner>>>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let row = sqlx::query("SELECT owner_team, owner_token FROM proxies WHERE id = $1")
        .bind(id.to_owned())
        .fetch_optional(exec)
        .await?;
    row.map(|r| Owner::from_row(&r)).transpose()
}

/// Lets `caller` act on proxy `id` (`action` names what it tried, for the
/// audit log). A proxy that does not exist and one the caller does not own
/// are the same 404; the second is audited as `access.denied`. Handlers
/// call this before opening their transaction.
pub async fn authorize(st: &AppState, caller: &Caller, id: &str, action: &str) -> ApiResult<()> {
    let owner = load_owner(&st.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found("proxy", id))?;
    if caller.may_access(owner.as_ref()) {
        return Ok(());
    }
    tracing::warn!(token = %caller.token_id, proxy = id, action, "access denied: the proxy belongs to another owner");
    let mut tx = st.pool.begin().await?;
    let seq = bump(&mut tx).await?;
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "access.denied",
        &format!("proxies/{id}"),
        Some(json!({
            "action": action,
            "token": caller.token_id,
            "team": caller.team,
            "owner": owner,
        })),
    )
    .await?;
    tx.commit().await?;
    Err(ApiError::not_found("proxy", id))
}

/// Body of `PUT /proxies/{id}/owner`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerInput {
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
}

/// `PUT /proxies/{id}/owner`: an admin gives a proxy (with its keys,
/// attachments and deployments) to a team or a team-less token.
pub async fn set_owner(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(input): Body<OwnerInput>,
) -> ApiResult<Json<Value>> {
    caller.require_admin("assigning a proxy's owner")?;
    let mut tx = st.pool.begin().await?;
    let owner = match (input.team, input.token) {
        (Some(team), None) => {
            let team = team.trim().to_owned();
            if !valid_team(&team) {
                return Err(ApiError::invalid(
                    "team",
                    "1 to 64 lowercase letters, digits and hyphens",
                ));
            }
            Owner::Team(team)
        }
        (None, Some(token)) => {
            let row =
                sqlx::query("SELECT team FROM api_tokens WHERE id = $1 AND revoked_at IS NULL")
                    .bind(token.clone())
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| {
                        ApiError::invalid("token", format!("no active API token `{token}`"))
                    })?;
            if let Some(team) = row.try_get::<Option<String>, _>("team")? {
                return Err(ApiError::invalid(
                    "token",
                    format!("token `{token}` belongs to team `{team}`; assign the team instead"),
                ));
            }
            Owner::Token(token)
        }
        _ => {
            return Err(ApiError::invalid(
                "team",
                "give exactly one of `team` and `token`",
            ));
        }
    };
    let before = load_owner(&mut *tx, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("proxy", &id))?;
    let (team, token) = owner.columns();
    if before.as_ref() != Some(&owner) {
        let seq = bump(&mut tx).await?;
        sqlx::query("UPDATE proxies SET owner_team = $1, owner_token = $2 WHERE id = $3")
            .bind(team)
            .bind(token)
            .bind(id.clone())
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            seq,
            &caller.actor(),
            "proxy.owner",
            &format!("proxies/{id}"),
            Some(json!({"from": before, "to": owner})),
        )
        .await?;
    }
    let p = crate::proxies::load_required(&mut tx, &id).await?;
    tx.commit().await?;
    Ok(Json(crate::proxies::view(&st, &p).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, team: Option<&str>) -> Caller {
        Caller {
            token_id: "tok_a".into(),
            name: "a".into(),
            role,
            team: team.map(str::to_owned),
        }
    }

    #[test]
    fn developers_reach_only_what_their_team_or_token_owns() {
        let team = Owner::Team("payments".into());
        let mine = Owner::Token("tok_a".into());
        let other = Owner::Token("tok_b".into());
        let solo = caller(Role::Developer, None);
        assert!(solo.may_access(Some(&mine)));
        assert!(!solo.may_access(Some(&other)));
        assert!(!solo.may_access(Some(&team)));
        assert!(!solo.may_access(None));
        let payments = caller(Role::Developer, Some("payments"));
        assert!(payments.may_access(Some(&team)));
        assert!(!payments.may_access(Some(&Owner::Team("search".into()))));
        let admin = caller(Role::Admin, None);
        assert!(admin.may_access(None) && admin.may_access(Some(&other)));
        assert_eq!(payments.owner(), team);
        assert_eq!(solo.owner(), mine);
        assert_eq!(
            serde_json::to_value(&team).unwrap(),
            json!({"team": "payments"})
        );
        assert!(valid_team("team-1") && !valid_team("-x") && !valid_team("Team"));
    }
}
