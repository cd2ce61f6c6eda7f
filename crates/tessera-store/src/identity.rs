//! Identity: users, accounts and memberships (their changes: `accounts`), the outbox, and the
//! support reset. Sessions and login challenges are in `sessions`.

use crate::audit::{self, NewAuditEvent};
use crate::{Store, StoreError, attempts};
use tessera_core::clock::{from_millis, to_millis};
use tessera_core::policy::AccountPolicy;
use tessera_core::roles::Role;
use time::OffsetDateTime;

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// User id (also the subject id of their factors).
    pub id: String,
    /// Email as given.
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
}

#[derive(sqlx::FromRow)]
struct PolicyRow {
    id: String,
    require_mfa: i64,
    grace_until: Option<i64>,
}

impl From<PolicyRow> for AccountPolicy {
    fn from(r: PolicyRow) -> Self {
        AccountPolicy { account_id: r.id, require_mfa: r.require_mfa != 0, grace_until: r.grace_until.map(from_millis) }
    }
}

impl Store {
    /// Insert a user unless the normalised email is taken (then `false`).
    pub async fn create_user(
        &self,
        id: &str,
        email: &str,
        email_norm: &str,
        hash: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "INSERT INTO users (id, email, email_norm, password_hash, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (email_norm) DO NOTHING",
        )
        .bind(id)
        .bind(email)
        .bind(email_norm)
        .bind(hash)
        .bind(to_millis(now))
        .execute(&mut *self.write().await?)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// The user with this normalised email.
    pub async fn user_by_email(&self, email_norm: &str) -> Result<Option<UserRow>, StoreError> {
        self.user_where("SELECT id, email, password_hash FROM users WHERE email_norm = $1", email_norm).await
    }

    async fn user_where(&self, sql: &'static str, key: &str) -> Result<Option<UserRow>, StoreError> {
        let r: Option<(String, String, String)> = sqlx::query_as(sql).bind(key).fetch_optional(&self.pool).await?;
        Ok(r.map(|(id, email, password_hash)| UserRow { id, email, password_hash }))
    }

    /// Replace a user's password hash (a rehash with current parameters).
    pub async fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
            .bind(user_id)
            .bind(hash)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(())
    }

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

    /// The current policy of one account.
    pub async fn account_policy(&self, account_id: &str) -> Result<Option<AccountPolicy>, StoreError> {
        Ok(sqlx::query_as::<_, PolicyRow>("SELECT id, require_mfa, grace_until FROM accounts WHERE id = $1")
            .bind(account_id)
            .fetch_optional(&self.pool)
            .await?
            .map(AccountPolicy::from))
    }

    /// The current policies of every account the user belongs to.
    pub async fn account_policies_of(&self, user_id: &str) -> Result<Vec<AccountPolicy>, StoreError> {
        Ok(sqlx::query_as::<_, PolicyRow>(
            "SELECT a.id, a.require_mfa, a.grace_until FROM accounts a \
             JOIN memberships m ON m.account_id = a.id WHERE m.user_id = $1 ORDER BY a.id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(AccountPolicy::from)
        .collect())
    }

    /// Whether the subject has at least one active factor.
    pub async fn has_active_factor(&self, subject_id: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM factors WHERE subject_id = $1 AND status = 'active'")
            .bind(subject_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// Reset a subject's counters of one kind (after a success outside a larger transaction).
    pub async fn reset_attempts(&self, subject_id: &str, kind: &str) -> Result<(), StoreError> {
        let mut c = self.write().await?;
        attempts::reset(&mut c, subject_id, kind).await
    }
}

/// What a support reset removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResetReport {
    /// Factors removed (with their secrets).
    pub factors: u64,
    /// Recovery codes removed.
    pub recovery_codes: u64,
    /// Sessions revoked.
    pub sessions: u64,
}

/// A notification to queue.
#[derive(Debug, Clone)]
pub struct NewNotification {
    /// Row id.
    pub id: String,
    /// To whom.
    pub user_id: String,
    /// Their address.
    pub email: String,
    /// What about (e.g. `mfa_reset`).
    pub kind: String,
    /// JSON object.
    pub detail: String,
}

/// Queue a notification (in the caller's transaction).
pub(crate) async fn insert_notification(
    conn: &mut sqlx::AnyConnection,
    n: &NewNotification,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO outbox (id, user_id, email, kind, detail, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&n.id)
        .bind(&n.user_id)
        .bind(&n.email)
        .bind(&n.kind)
        .bind(&n.detail)
        .bind(to_millis(now))
        .execute(conn)
        .await?;
    Ok(())
}

/// Lock a user's row for the rest of the transaction (PostgreSQL; SQLite's `BEGIN IMMEDIATE`
/// already serialises writers): a password-level sign-in and a first factor's confirmation take
/// it, so neither can slip a session past the other.
pub(crate) async fn lock_user(
    conn: &mut sqlx::AnyConnection,
    backend: crate::Backend,
    user_id: &str,
) -> Result<(), StoreError> {
    if backend == crate::Backend::Postgres {
        sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE").bind(user_id).execute(conn).await?;
    }
    Ok(())
}

pub(crate) fn parse_role(r: &str) -> Result<Role, StoreError> {
    Role::parse(r).ok_or_else(|| StoreError::Corrupt(format!("role {r:?}")))
}

impl Store {
    /// Queue a notification on its own.
    pub async fn queue_notification(&self, n: &NewNotification, now: OffsetDateTime) -> Result<(), StoreError> {
        let mut c = self.write().await?;
        insert_notification(&mut c, n, now).await
    }

    /// Support reset, in one transaction: remove every factor (and secret) and recovery code
    /// of the user, revoke their sessions, void their login challenges, clear their
    /// second-factor counters, queue `notice` and append `audit`.
    pub async fn support_reset(
        &self,
        user_id: &str,
        now: OffsetDateTime,
        notice: &NewNotification,
        audit: &NewAuditEvent,
    ) -> Result<ResetReport, StoreError> {
        let mut tx = self.begin().await?;
        // The counters row first (the lock order of `attempts::gate_accept_pg`).
        attempts::reset(&mut tx, user_id, attempts::SECOND_FACTOR).await?;
        // Factor rows first; their secrets go with them (the foreign key cascades): the order
        // `confirm_totp` locks them in, so the two never deadlock.
        let factors = sqlx::query("DELETE FROM factors WHERE subject_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let recovery_codes = sqlx::query("DELETE FROM recovery_codes WHERE subject_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let sessions = sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
            .bind(user_id)
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("UPDATE login_challenges SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL")
            .bind(user_id)
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await?;
        insert_notification(&mut tx, notice, now).await?;
        audit::insert(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(ResetReport { factors, recovery_codes, sessions })
    }

    /// Queued notifications not yet sent, oldest first: (id, email, kind, detail).
    pub async fn unsent_notifications(&self, limit: u32) -> Result<Vec<(String, String, String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, email, kind, detail FROM outbox WHERE sent_at IS NULL ORDER BY created_at, id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }
}

impl Store {
    /// Mark a queued notification as delivered.
    pub async fn mark_notification_sent(&self, id: &str, now: OffsetDateTime) -> Result<(), StoreError> {
        // A delivered invitation's code is no longer kept in the clear.
        sqlx::query(
            "UPDATE outbox SET sent_at = $2, attempts = attempts + 1, \
             detail = CASE WHEN kind = 'invitation' THEN '{}' ELSE detail END WHERE id = $1",
        )
        .bind(id)
        .bind(to_millis(now))
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    /// Count a failed delivery attempt (the notification stays queued).
    pub async fn mark_notification_failed(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET attempts = attempts + 1 WHERE id = $1")
            .bind(id)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(())
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

impl Store {
    /// The user with this id.
    pub async fn user_by_id(&self, user_id: &str) -> Result<Option<UserRow>, StoreError> {
        self.user_where("SELECT id, email, password_hash FROM users WHERE id = $1", user_id).await
    }

    /// The accounts a user belongs to, by name.
    pub async fn memberships_of(&self, user_id: &str) -> Result<Vec<MembershipRow>, StoreError> {
        let rows: Vec<(String, String, i64, Option<i64>, String)> = sqlx::query_as(
            "SELECT a.id, a.name, a.require_mfa, a.grace_until, m.role FROM accounts a \
             JOIN memberships m ON m.account_id = a.id WHERE m.user_id = $1 ORDER BY a.name, a.id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, name, req, grace, role)| {
                Ok(MembershipRow {
                    policy: PolicyRow { id, require_mfa: req, grace_until: grace }.into(),
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
