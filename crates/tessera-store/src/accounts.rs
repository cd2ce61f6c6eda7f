//! Membership changes and invitations. Each change runs in one transaction that first locks
//! the account (PostgreSQL: its row `FOR UPDATE`; SQLite: `BEGIN IMMEDIATE` already serialises
//! writers), reads the roles it depends on, and applies `tessera_core::roles`' rule to them, so
//! no concurrent change slips between the check and the write.

use crate::audit::{self, NewAuditEvent};
use crate::outbox::{NewNotification, insert_notification};
use crate::{Backend, Store, StoreError};
use sqlx::AnyConnection;
use tessera_core::clock::{from_millis, to_millis};
use tessera_core::policy::AccountPolicy;
use tessera_core::roles::{self, Refusal, Role};
use time::OffsetDateTime;

/// An invitation as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitationRow {
    /// Invitation id.
    pub id: String,
    /// To which account.
    pub account_id: String,
    /// The account's name.
    pub account_name: String,
    /// The address as the inviter typed it.
    pub email: String,
    /// The role on acceptance.
    pub role: Role,
    /// Who invited.
    pub invited_by: String,
    /// When.
    pub created_at: OffsetDateTime,
    /// Until when it can be accepted.
    pub expires_at: OffsetDateTime,
}

/// An invitation to create (or to refresh, when one is open for the same account and email).
#[derive(Debug, Clone)]
pub struct NewInvitation {
    /// Id for a new row.
    pub id: String,
    /// Account.
    pub account_id: String,
    /// Address as typed.
    pub email: String,
    /// Normalised address (the binding).
    pub email_norm: String,
    /// Role on acceptance.
    pub role: Role,
    /// Inviter.
    pub invited_by: String,
    /// SHA-256 of the code the mail carries.
    pub code_hash: Vec<u8>,
    /// Now.
    pub now: OffsetDateTime,
    /// Expiry.
    pub expires_at: OffsetDateTime,
}

/// What accepting an invitation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acceptance {
    /// The user is a member now (or already was); the account id.
    Joined(String),
    /// No open invitation with this id for this email (unknown, someone else's, expired,
    /// accepted, declined or cancelled).
    NotFound,
    /// The inviter no longer holds a role that may grant this one.
    InviterLacksRole(Refusal),
}

/// Lock the account for a membership change; `false` if there is no such account.
async fn lock_account(conn: &mut AnyConnection, backend: Backend, account_id: &str) -> Result<bool, StoreError> {
    let sql = match backend {
        Backend::Postgres => "SELECT id FROM accounts WHERE id = $1 FOR UPDATE",
        Backend::Sqlite => "SELECT id FROM accounts WHERE id = $1",
    };
    Ok(sqlx::query_scalar::<_, String>(sql).bind(account_id).fetch_optional(conn).await?.is_some())
}

async fn role_of(conn: &mut AnyConnection, account_id: &str, user_id: &str) -> Result<Option<Role>, StoreError> {
    let r: Option<String> = sqlx::query_scalar("SELECT role FROM memberships WHERE account_id = $1 AND user_id = $2")
        .bind(account_id)
        .bind(user_id)
        .fetch_optional(conn)
        .await?;
    r.map(|r| Role::parse(&r).ok_or_else(|| StoreError::Corrupt(format!("role {r:?}")))).transpose()
}

const INVITATION_COLUMNS: &str =
    "i.id, i.account_id, a.name, i.email, i.role, i.invited_by, i.created_at, i.expires_at";

type InvitationTuple = (String, String, String, String, String, String, i64, i64);

fn invitation(t: InvitationTuple) -> Result<InvitationRow, StoreError> {
    let (id, account_id, account_name, email, role, invited_by, created_at, expires_at) = t;
    Ok(InvitationRow {
        role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role {role:?}")))?,
        id,
        account_id,
        account_name,
        email,
        invited_by,
        created_at: from_millis(created_at),
        expires_at: from_millis(expires_at),
    })
}

impl Store {
    /// Change member `target`'s role to `new` (`None`: remove them from the account) on behalf
    /// of `actor`, if [`roles::may_change`] allows it with the roles as they are inside this
    /// transaction. `Ok(Err(refusal))` changes nothing; `NotFound`-like cases (no such account,
    /// target not a member) are `Ok(Err(..))` too — see the return type.
    pub async fn change_member(
        &self,
        account_id: &str,
        actor: &str,
        target: &str,
        new: Option<Role>,
        audit: &NewAuditEvent,
    ) -> Result<Result<(), MemberChangeError>, StoreError> {
        let mut tx = self.begin().await?;
        if !lock_account(&mut tx, self.backend, account_id).await? {
            return Ok(Err(MemberChangeError::NoAccount));
        }
        let actor_role = role_of(&mut tx, account_id, actor).await?;
        if actor_role.is_none() {
            return Ok(Err(MemberChangeError::NoAccount));
        }
        let Some(target_role) = role_of(&mut tx, account_id, target).await? else {
            return Ok(Err(MemberChangeError::NotAMember));
        };
        let owners: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE account_id = $1 AND role = 'owner'")
                .bind(account_id)
                .fetch_one(&mut *tx)
                .await?;
        if let Err(r) = roles::may_change(actor_role, target_role, new, u32::try_from(owners).unwrap_or(u32::MAX)) {
            return Ok(Err(MemberChangeError::Refused(r)));
        }
        let q = match new {
            Some(role) => sqlx::query("UPDATE memberships SET role = $3 WHERE account_id = $1 AND user_id = $2")
                .bind(account_id)
                .bind(target)
                .bind(role.as_str()),
            None => sqlx::query("DELETE FROM memberships WHERE account_id = $1 AND user_id = $2")
                .bind(account_id)
                .bind(target),
        };
        q.execute(&mut *tx).await?;
        audit::insert(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Create an invitation, or refresh the open one for the same account and email (new role,
    /// inviter and expiry), queueing `mail` if given; checks [`roles::may_invite`] for the
    /// inviter inside the transaction. Returns the invitation's id.
    pub async fn invite(
        &self,
        inv: &NewInvitation,
        mail: Option<&NewNotification>,
        audit: &NewAuditEvent,
    ) -> Result<Result<String, MemberChangeError>, StoreError> {
        let mut tx = self.begin().await?;
        if !lock_account(&mut tx, self.backend, &inv.account_id).await? {
            return Ok(Err(MemberChangeError::NoAccount));
        }
        let inviter = role_of(&mut tx, &inv.account_id, &inv.invited_by).await?;
        if inviter.is_none() {
            return Ok(Err(MemberChangeError::NoAccount));
        }
        if let Err(r) = roles::may_invite(inviter, inv.role) {
            return Ok(Err(MemberChangeError::Refused(r)));
        }
        let now = to_millis(inv.now);
        let mailed = mail.map(|_| now);
        let open: Option<String> = sqlx::query_scalar(
            "SELECT id FROM invitations WHERE account_id = $1 AND email_norm = $2 \
             AND accepted_at IS NULL AND closed_at IS NULL AND expires_at > $3",
        )
        .bind(&inv.account_id)
        .bind(&inv.email_norm)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let id = match open {
            Some(id) => {
                // A new code only goes with a new mail; otherwise the mailed one stays valid.
                sqlx::query(
                    "UPDATE invitations SET role = $2, invited_by = $3, expires_at = $4, email = $5, \
                     mailed_at = COALESCE($6, mailed_at), \
                     code_hash = CASE WHEN $6 IS NULL THEN code_hash ELSE $7 END WHERE id = $1",
                )
                .bind(&id)
                .bind(inv.role.as_str())
                .bind(&inv.invited_by)
                .bind(to_millis(inv.expires_at))
                .bind(&inv.email)
                .bind(mailed)
                .bind(&inv.code_hash)
                .execute(&mut *tx)
                .await?;
                id
            }
            None => {
                sqlx::query(
                    "INSERT INTO invitations (id, account_id, email, email_norm, role, invited_by, code_hash, \
                     created_at, expires_at, mailed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(&inv.id)
                .bind(&inv.account_id)
                .bind(&inv.email)
                .bind(&inv.email_norm)
                .bind(inv.role.as_str())
                .bind(&inv.invited_by)
                .bind(&inv.code_hash)
                .bind(now)
                .bind(to_millis(inv.expires_at))
                .bind(mailed)
                .execute(&mut *tx)
                .await?;
                inv.id.clone()
            }
        };
        if let Some(n) = mail {
            insert_notification(&mut tx, n, inv.now).await?;
        }
        audit::insert(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Ok(id))
    }

    /// Whether an invitation to `email_norm` is open at `now` (sign-up by invitation only).
    pub async fn is_invited(&self, email_norm: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM invitations WHERE email_norm = $1 \
             AND accepted_at IS NULL AND closed_at IS NULL AND expires_at > $2",
        )
        .bind(email_norm)
        .bind(to_millis(now))
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// Invitation mails sent since `since`: for the account, by the inviter (any account), and
    /// whether the account's invitation to `email_norm` that is still open at `now` was mailed
    /// then (the app's rate limits on invitation mail).
    pub async fn invitation_mails(
        &self,
        account_id: &str,
        inviter: &str,
        email_norm: &str,
        since: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<InvitationMails, StoreError> {
        let (account, by_inviter, to_this, to_address): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(CASE WHEN account_id = $1 THEN 1 ELSE 0 END), 0), \
                    COALESCE(SUM(CASE WHEN invited_by = $2 THEN 1 ELSE 0 END), 0), \
                    COALESCE(SUM(CASE WHEN account_id = $1 AND email_norm = $3 AND accepted_at IS NULL \
                                      AND closed_at IS NULL AND expires_at > $5 THEN 1 ELSE 0 END), 0), \
                    COALESCE(SUM(CASE WHEN email_norm = $3 THEN 1 ELSE 0 END), 0) \
             FROM invitations WHERE mailed_at > $4 AND (account_id = $1 OR invited_by = $2 OR email_norm = $3)",
        )
        .bind(account_id)
        .bind(inviter)
        .bind(email_norm)
        .bind(to_millis(since))
        .bind(to_millis(now))
        .fetch_one(&self.pool)
        .await?;
        let n = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
        Ok(InvitationMails {
            account: n(account),
            by_inviter: n(by_inviter),
            to_this_address: to_this > 0,
            to_address: n(to_address),
        })
    }

    /// Open invitations for an email (the invitee's view), newest first.
    pub async fn invitations_for(
        &self,
        email_norm: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<InvitationRow>, StoreError> {
        self.open_invitations("i.email_norm", email_norm, "i.created_at DESC, i.id", now).await
    }

    /// Open invitations of an account (the admins' view), by email.
    pub async fn invitations_of(
        &self,
        account_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<InvitationRow>, StoreError> {
        self.open_invitations("i.account_id", account_id, "i.email_norm, i.id", now).await
    }

    /// Open invitations whose column `by` (a constant) is `key`, in `order` (a constant).
    async fn open_invitations(
        &self,
        by: &'static str,
        key: &str,
        order: &'static str,
        now: OffsetDateTime,
    ) -> Result<Vec<InvitationRow>, StoreError> {
        let rows: Vec<InvitationTuple> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations i JOIN accounts a ON a.id = i.account_id \
             WHERE {by} = $1 AND i.accepted_at IS NULL AND i.closed_at IS NULL AND i.expires_at > $2 ORDER BY {order}"
        )))
        .bind(key)
        .bind(to_millis(now))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(invitation).collect()
    }

    /// Accept the open invitation `id` addressed to `email_norm`, with the code mailed to it
    /// (`code_hash`), as `user_id`: with the account locked first, re-read the invitation (still
    /// open, unexpired, this email, this code), check the inviter still may grant the role
    /// ([`roles::may_invite`]), add the membership (a member already keeps their role: a role
    /// change is its own action), mark the invitation accepted and append `audit`.
    pub async fn accept_invitation(
        &self,
        id: &str,
        code_hash: &[u8],
        user_id: &str,
        email_norm: &str,
        now: OffsetDateTime,
        audit: &NewAuditEvent,
    ) -> Result<Acceptance, StoreError> {
        let mut tx = self.begin().await?;
        let Some(account_id) = invitation_account(&mut tx, id).await? else { return Ok(Acceptance::NotFound) };
        if !lock_account(&mut tx, self.backend, &account_id).await? {
            return Ok(Acceptance::NotFound);
        }
        let Some((role, inviter)) = open_invitation(&mut tx, self.backend, id, email_norm, code_hash, now).await?
        else {
            return Ok(Acceptance::NotFound);
        };
        if let Err(r) = roles::may_invite(role_of(&mut tx, &account_id, &inviter).await?, role) {
            return Ok(Acceptance::InviterLacksRole(r));
        }
        sqlx::query(
            "INSERT INTO memberships (user_id, account_id, role) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, account_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(&account_id)
        .bind(role.as_str())
        .execute(&mut *tx)
        .await?;
        let n = sqlx::query(
            "UPDATE invitations SET accepted_at = $2 \
             WHERE id = $1 AND accepted_at IS NULL AND closed_at IS NULL AND expires_at > $2",
        )
        .bind(id)
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Ok(Acceptance::NotFound);
        }
        let mut audit = audit.clone();
        audit.detail =
            serde_json::json!({ "account_id": account_id, "role": role.as_str(), "invitation_id": id }).to_string();
        audit::insert(&mut tx, &audit).await?;
        tx.commit().await?;
        Ok(Acceptance::Joined(account_id))
    }

    /// Close an open invitation without accepting it, with its account locked: declined by
    /// the invitee (`by_invitee`: their email and the mailed code's hash) or cancelled by an
    /// admin of `account_id` (the caller checked the role). `false` if there was no such open
    /// invitation.
    pub async fn close_invitation(
        &self,
        id: &str,
        account_id: Option<&str>,
        by_invitee: Option<(&str, &[u8])>,
        now: OffsetDateTime,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let Some(account) = invitation_account(&mut tx, id).await? else { return Ok(false) };
        if account_id.is_some_and(|a| a != account) || !lock_account(&mut tx, self.backend, &account).await? {
            return Ok(false);
        }
        if let Some((email_norm, code_hash)) = by_invitee
            && open_invitation(&mut tx, self.backend, id, email_norm, code_hash, now).await?.is_none()
        {
            return Ok(false);
        }
        let n = sqlx::query(
            "UPDATE invitations SET closed_at = $2 \
             WHERE id = $1 AND accepted_at IS NULL AND closed_at IS NULL AND expires_at > $2",
        )
        .bind(id)
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Ok(false);
        }
        audit::insert(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// The account an invitation is to (any state).
async fn invitation_account(conn: &mut AnyConnection, id: &str) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT account_id FROM invitations WHERE id = $1").bind(id).fetch_optional(conn).await?)
}

/// The role and inviter of invitation `id` if it is open at `now`, addressed to `email_norm` and
/// mailed with the code whose hash is `code_hash` (locked on PostgreSQL).
async fn open_invitation(
    conn: &mut AnyConnection,
    backend: Backend,
    id: &str,
    email_norm: &str,
    code_hash: &[u8],
    now: OffsetDateTime,
) -> Result<Option<(Role, String)>, StoreError> {
    let lock = if backend == Backend::Postgres { " FOR UPDATE" } else { "" };
    let row: Option<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT role, invited_by FROM invitations WHERE id = $1 AND email_norm = $2 AND code_hash = $3 \
         AND accepted_at IS NULL AND closed_at IS NULL AND expires_at > $4{lock}"
    )))
    .bind(id)
    .bind(email_norm)
    .bind(code_hash)
    .bind(to_millis(now))
    .fetch_optional(conn)
    .await?;
    row.map(|(role, inviter)| {
        Role::parse(&role).map(|r| (r, inviter)).ok_or_else(|| StoreError::Corrupt(format!("role {role:?}")))
    })
    .transpose()
}

/// Invitation mails sent in a period (see [`Store::invitation_mails`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvitationMails {
    /// For the account.
    pub account: u32,
    /// By the inviter, for any account.
    pub by_inviter: u32,
    /// Whether the open invitation to this address (of this account) was mailed in the period.
    pub to_this_address: bool,
    /// To this address, from any account.
    pub to_address: u32,
}

/// Why a membership change or an invitation was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChangeError {
    /// No such account, or the actor is not a member of it (indistinguishable on purpose).
    NoAccount,
    /// The target is not a member.
    NotAMember,
    /// The roles refuse it.
    Refused(Refusal),
}

#[derive(sqlx::FromRow)]
struct PolicyRow {
    id: String,
    require_mfa: i64,
    grace_until: Option<i64>,
    max_trust_days: Option<i64>,
}

impl From<PolicyRow> for AccountPolicy {
    fn from(r: PolicyRow) -> Self {
        AccountPolicy {
            account_id: r.id,
            require_mfa: r.require_mfa != 0,
            grace_until: r.grace_until.map(from_millis),
            max_trust_days: r.max_trust_days.map(|d| u32::try_from(d).unwrap_or(0)),
        }
    }
}

/// One of a user's accounts, as the pages list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipRow {
    /// The account's policy (id, require_mfa, grace).
    pub policy: AccountPolicy,
    /// The account's name.
    pub name: String,
    /// The user's role in it.
    pub role: Role,
}

/// A member of an account, as its settings page lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    /// User id.
    pub user_id: String,
    /// Email as given.
    pub email: String,
    /// Their role.
    pub role: Role,
    /// Whether they have an active second factor.
    pub has_mfa: bool,
}

pub(crate) fn parse_role(r: &str) -> Result<Role, StoreError> {
    Role::parse(r).ok_or_else(|| StoreError::Corrupt(format!("role {r:?}")))
}

impl Store {
    /// Create an account with its first owner, in one transaction.
    pub async fn create_account(
        &self,
        id: &str,
        name: &str,
        owner: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO accounts (id, name, require_mfa, created_at) VALUES ($1, $2, 0, $3)")
            .bind(id)
            .bind(name)
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO memberships (user_id, account_id, role) VALUES ($1, $2, 'owner')")
            .bind(owner)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
    /// A member's role in an account, if they are one.
    pub async fn member_role(&self, account_id: &str, user_id: &str) -> Result<Option<Role>, StoreError> {
        let r: Option<String> =
            sqlx::query_scalar("SELECT role FROM memberships WHERE account_id = $1 AND user_id = $2")
                .bind(account_id)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        r.map(|r| parse_role(&r)).transpose()
    }
    /// Set an account's MFA policy; `false` if there is no such account.
    pub async fn set_account_policy(
        &self,
        account_id: &str,
        require_mfa: bool,
        grace_until: Option<OffsetDateTime>,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query("UPDATE accounts SET require_mfa = $2, grace_until = $3 WHERE id = $1")
            .bind(account_id)
            .bind(i64::from(require_mfa))
            .bind(grace_until.map(to_millis))
            .execute(&mut *self.write().await?)
            .await?
            .rows_affected();
        Ok(n == 1)
    }
    /// Set an account's "trust this browser" cap in days (`None`: no cap of its own; 0: never);
    /// `false` if there is no such account.
    pub async fn set_trust_cap(&self, account_id: &str, max_trust_days: Option<u32>) -> Result<bool, StoreError> {
        let n = sqlx::query("UPDATE accounts SET max_trust_days = $2 WHERE id = $1")
            .bind(account_id)
            .bind(max_trust_days.map(i64::from))
            .execute(&mut *self.write().await?)
            .await?
            .rows_affected();
        Ok(n == 1)
    }
    /// The current policy of one account.
    pub async fn account_policy(&self, account_id: &str) -> Result<Option<AccountPolicy>, StoreError> {
        Ok(sqlx::query_as::<_, PolicyRow>(
            "SELECT id, require_mfa, grace_until, max_trust_days FROM accounts WHERE id = $1",
        )
        .bind(account_id)
        .fetch_optional(&self.pool)
        .await?
        .map(AccountPolicy::from))
    }
    /// The current policies of every account the user belongs to.
    pub async fn account_policies_of(&self, user_id: &str) -> Result<Vec<AccountPolicy>, StoreError> {
        Ok(sqlx::query_as::<_, PolicyRow>(
            "SELECT a.id, a.require_mfa, a.grace_until, a.max_trust_days FROM accounts a \
             JOIN memberships m ON m.account_id = a.id WHERE m.user_id = $1 ORDER BY a.id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(AccountPolicy::from)
        .collect())
    }
    /// The accounts a user belongs to, by name.
    pub async fn memberships_of(&self, user_id: &str) -> Result<Vec<MembershipRow>, StoreError> {
        /// id, name, require_mfa, grace_until, max_trust_days, role.
        type Row = (String, String, i64, Option<i64>, Option<i64>, String);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT a.id, a.name, a.require_mfa, a.grace_until, a.max_trust_days, m.role FROM accounts a \
             JOIN memberships m ON m.account_id = a.id WHERE m.user_id = $1 ORDER BY a.name, a.id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, name, req, grace, cap, role)| {
                Ok(MembershipRow {
                    policy: PolicyRow { id, require_mfa: req, grace_until: grace, max_trust_days: cap }.into(),
                    name,
                    role: parse_role(&role)?,
                })
            })
            .collect()
    }
    /// An account's members with whether each has an active factor, by email.
    pub async fn members_of(&self, account_id: &str) -> Result<Vec<MemberRow>, StoreError> {
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT u.id, u.email, m.role, \
             (SELECT COUNT(*) FROM factors f WHERE f.subject_id = u.id AND f.status = 'active') \
             FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.account_id = $1 ORDER BY u.email_norm",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(user_id, email, role, n)| Ok(MemberRow { user_id, email, role: parse_role(&role)?, has_mfa: n > 0 }))
            .collect()
    }
}
