//! Sessions and login challenges. Tokens are stored only as hashes; a session also has a
//! stable id that survives token rotation (a pending device belongs to it, the sessions list
//! names it). Consuming a challenge and rotating a token are each one atomic statement.

use crate::audit::{self, NewAuditEvent};
use crate::{Store, StoreError};
use sqlx::AnyConnection;
use tessera_core::clock::{from_millis, to_millis};
use time::OffsetDateTime;

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// Stable id (not a secret; the token is).
    pub id: String,
    /// Whose.
    pub user_id: String,
    /// 1: password; 2: password and a second factor.
    pub aal: i64,
    /// When the password was last proven in this session.
    pub password_verified_at: Option<OffsetDateTime>,
    /// When a second factor was last proven in this session.
    pub mfa_verified_at: Option<OffsetDateTime>,
    /// When it was opened.
    pub created_at: OffsetDateTime,
    /// When it was last used (written at most once a minute).
    pub last_seen_at: OffsetDateTime,
    /// When it ends at the latest.
    pub expires_at: OffsetDateTime,
    /// Where it was opened (client address), if known.
    pub ip: Option<String>,
    /// The browser it was opened in, if known.
    pub user_agent: Option<String>,
    /// Opened by a trusted browser: when that trust was made.
    pub trusted_since: Option<OffsetDateTime>,
}

/// What a browser that completed a sign-in was to the user before (see
/// [`Store::remember_browser`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrowserSeen {
    /// It signed the user in before.
    Known,
    /// Not seen with this user before; they have other browsers.
    New,
    /// The user's first browser.
    First,
}

/// A session to open.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Stable id.
    pub id: String,
    /// SHA-256 of the token.
    pub token_hash: Vec<u8>,
    /// Whose.
    pub user_id: String,
    /// 1 or 2.
    pub aal: i64,
    /// When the password was proven (now, for a sign-in).
    pub password_verified_at: Option<OffsetDateTime>,
    /// When a second factor was proven, if one was.
    pub mfa_verified_at: Option<OffsetDateTime>,
    /// Now.
    pub created_at: OffsetDateTime,
    /// Absolute end.
    pub expires_at: OffsetDateTime,
    /// Client address.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// Opened by a trusted browser: when that trust was made (no factor proven; accounts that
    /// cap trust apply their cap to it).
    pub trusted_since: Option<OffsetDateTime>,
}

/// A token rotation: the session's new token and what was just proven in it.
#[derive(Debug, Clone)]
pub struct Rotation<'a> {
    /// The session's stable id.
    pub session_id: &'a str,
    /// Its owner (a rotation never moves a session to another user).
    pub user_id: &'a str,
    /// SHA-256 of the new token (the old one stops working in the same statement).
    pub new_token_hash: &'a [u8],
    /// The level afterwards.
    pub aal: i64,
    /// Set when the password was just proven.
    pub password_verified_at: Option<OffsetDateTime>,
    /// Set when a second factor was just proven.
    pub mfa_verified_at: Option<OffsetDateTime>,
}

const SESSION_COLUMNS: &str = "id, user_id, aal, password_verified_at, mfa_verified_at, created_at, last_seen_at, \
     expires_at, ip, user_agent, trusted_since";

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    user_id: String,
    aal: i64,
    password_verified_at: Option<i64>,
    mfa_verified_at: Option<i64>,
    created_at: i64,
    last_seen_at: Option<i64>,
    expires_at: i64,
    ip: Option<String>,
    user_agent: Option<String>,
    trusted_since: Option<i64>,
}

impl From<Row> for SessionRow {
    fn from(r: Row) -> Self {
        SessionRow {
            id: r.id,
            user_id: r.user_id,
            aal: r.aal,
            password_verified_at: r.password_verified_at.map(from_millis),
            mfa_verified_at: r.mfa_verified_at.map(from_millis),
            created_at: from_millis(r.created_at),
            last_seen_at: from_millis(r.last_seen_at.unwrap_or(r.created_at)),
            expires_at: from_millis(r.expires_at),
            ip: r.ip,
            user_agent: r.user_agent,
            trusted_since: r.trusted_since.map(from_millis),
        }
    }
}

/// The column a session is looked up by: its token's hash, or (`forward`) its forward token's.
fn token_column(forward: bool) -> &'static str {
    if forward { "forward_hash" } else { "token_hash" }
}

pub(crate) async fn insert_session(conn: &mut AnyConnection, s: &NewSession) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sessions (token_hash, id, user_id, aal, password_verified_at, mfa_verified_at, created_at, \
         last_seen_at, expires_at, ip, user_agent, trusted_since) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10, $11)",
    )
    .bind(&s.token_hash)
    .bind(&s.id)
    .bind(&s.user_id)
    .bind(s.aal)
    .bind(s.password_verified_at.map(to_millis))
    .bind(s.mfa_verified_at.map(to_millis))
    .bind(to_millis(s.created_at))
    .bind(to_millis(s.expires_at))
    .bind(&s.ip)
    .bind(&s.user_agent)
    .bind(s.trusted_since.map(to_millis))
    .execute(conn)
    .await?;
    Ok(())
}

/// Give a live session a new token and the level and proof times of what was just proven; the
/// old token stops working in the same statement, and so does its forward token (the caller
/// mints a new one where it keeps a domain-wide cookie). `false` if the session is not live.
pub(crate) async fn rotate(
    conn: &mut dyn crate::exec::Exec,
    r: &Rotation<'_>,
    now: OffsetDateTime,
    idle_cutoff: OffsetDateTime,
) -> Result<bool, StoreError> {
    let n = conn
        .execute(
            "UPDATE sessions SET token_hash = $3, aal = $4, forward_hash = NULL, \
             password_verified_at = COALESCE($5, password_verified_at), \
             mfa_verified_at = COALESCE($6, mfa_verified_at), last_seen_at = $7 \
             WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > $7 AND last_seen_at > $8",
            crate::exec::args![
                r.session_id,
                r.user_id,
                r.new_token_hash,
                r.aal,
                r.password_verified_at.map(to_millis),
                r.mfa_verified_at.map(to_millis),
                to_millis(now),
                to_millis(idle_cutoff)
            ],
        )
        .await?;
    Ok(n == 1)
}

/// What [`Store::create_password_session`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSession {
    /// Opened.
    Opened,
    /// Not opened: the user has an active factor by now (ask for it).
    HasFactor,
    /// Not opened: the password changed since it was checked.
    PasswordChanged,
}

/// Revoke every live session of `user_id` except `keep` (if given); returns how many.
pub(crate) async fn revoke_others(
    conn: &mut dyn crate::exec::Exec,
    user_id: &str,
    keep: Option<&str>,
    now: OffsetDateTime,
) -> Result<u64, StoreError> {
    conn.execute(
        "UPDATE sessions SET revoked_at = $2 \
         WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 AND ($3 IS NULL OR id <> $3)",
        crate::exec::args![user_id, to_millis(now), keep],
    )
    .await
}

/// Forget the user's known browsers but `keep` (a token's SHA-256), in the caller's transaction:
/// a password change or reset, after which a browser is known again by signing in.
pub(crate) async fn forget_browsers(
    conn: &mut AnyConnection,
    user_id: &str,
    keep: Option<&[u8]>,
) -> Result<u64, StoreError> {
    let q = match keep {
        Some(k) => {
            sqlx::query("DELETE FROM known_browsers WHERE user_id = $1 AND token_hash <> $2").bind(user_id).bind(k)
        }
        None => sqlx::query("DELETE FROM known_browsers WHERE user_id = $1").bind(user_id),
    };
    Ok(q.execute(conn).await?.rows_affected())
}

impl Store {
    /// Store a login challenge (by its token's hash).
    ///
    /// Only while the user's password is still `password_hash` (the one checked): `false`, and
    /// nothing stored, after a reset or change since.
    pub async fn create_challenge(
        &self,
        token_hash: &[u8],
        user_id: &str,
        password_hash: &str,
        now: OffsetDateTime,
        expires: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.create_challenge_returning(token_hash, user_id, password_hash, now, expires, None).await
    }

    /// [`Store::create_challenge`], remembering where the sign-in returns once it completes
    /// (see [`Store::challenge_return_to`]).
    pub async fn create_challenge_returning(
        &self,
        token_hash: &[u8],
        user_id: &str,
        password_hash: &str,
        now: OffsetDateTime,
        expires: OffsetDateTime,
        return_to: Option<&str>,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "INSERT INTO login_challenges (token_hash, user_id, created_at, expires_at, return_to) \
             SELECT $1, $2, $3, $4, $6 WHERE EXISTS (SELECT 1 FROM users WHERE id = $2 AND password_hash = $5)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(to_millis(now))
        .bind(to_millis(expires))
        .bind(password_hash)
        .bind(return_to)
        .execute(&mut *self.write().await?)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// The user of a challenge that is unused and unexpired at `now`.
    pub async fn challenge_user(&self, token_hash: &[u8], now: OffsetDateTime) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM login_challenges WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(to_millis(now))
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Where the sign-in of a challenge returns once it completes, as stored (the caller checks
    /// it again before following it); `None` when it named nothing. Read until the challenge
    /// expires, used or not (the completed sign-in reads it just after using the challenge).
    pub async fn challenge_return_to(
        &self,
        token_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar::<_, Option<String>>(
            "SELECT return_to FROM login_challenges WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(to_millis(now))
        .fetch_optional(&self.pool)
        .await?
        .flatten())
    }

    /// Use up a challenge and open `session` for its user, in one transaction (which also voids
    /// the user's outstanding password-reset links); `false` (and no session) if the challenge
    /// was already used, voided or expired.
    pub async fn complete_challenge(
        &self,
        challenge_hash: &[u8],
        session: &NewSession,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "UPDATE login_challenges SET used_at = $3 \
             WHERE token_hash = $1 AND user_id = $2 AND used_at IS NULL AND expires_at > $3",
        )
        .bind(challenge_hash)
        .bind(&session.user_id)
        .bind(to_millis(session.created_at))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Ok(false);
        }
        insert_session(&mut tx, session).await?;
        audit::insert(&mut tx, audit).await?;
        crate::mail_tokens::void(&mut tx, &session.user_id, crate::PASSWORD_RESET, session.created_at).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Open `session` (a sign-in that needs no challenge: a passkey) and append `audit`, in one
    /// transaction that also voids the user's outstanding password-reset links.
    pub async fn open_session(&self, session: &NewSession, audit: &NewAuditEvent) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        insert_session(&mut tx, session).await?;
        audit::insert(&mut tx, audit).await?;
        crate::mail_tokens::void(&mut tx, &session.user_id, crate::PASSWORD_RESET, session.created_at).await?;
        tx.commit().await
    }

    /// Void every open challenge of a user (when they get locked).
    pub async fn void_challenges(&self, user_id: &str, now: OffsetDateTime) -> Result<u64, StoreError> {
        Ok(sqlx::query("UPDATE login_challenges SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL")
            .bind(user_id)
            .bind(to_millis(now))
            .execute(&mut *self.write().await?)
            .await?
            .rows_affected())
    }

    /// Open a password-level session and append `audit`, in one transaction — unless the user
    /// has an active factor by now (a first factor confirmed since the password was checked
    /// revokes every password-only session; one opened just after must not escape that), or
    /// the password is no longer the one checked (`password_hash`: a reset or change since, which
    /// ended every session; a sign-in in flight must not outlive it). Then nothing is written.
    /// Opening it voids the user's outstanding password-reset links.
    pub async fn create_password_session(
        &self,
        session: &NewSession,
        password_hash: &str,
        audit: &NewAuditEvent,
    ) -> Result<PasswordSession, StoreError> {
        let mut tx = self.begin().await?;
        // The user row serialises this against a first factor's confirmation and a password
        // reset (which take it too).
        if !crate::users::lock_if_password_is(&mut tx, self.backend(), &session.user_id, password_hash).await? {
            return Ok(PasswordSession::PasswordChanged);
        }
        let factors: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM factors WHERE subject_id = $1 AND status = 'active'")
                .bind(&session.user_id)
                .fetch_one(&mut *tx)
                .await?;
        if factors > 0 {
            return Ok(PasswordSession::HasFactor);
        }
        insert_session(&mut tx, session).await?;
        audit::insert(&mut tx, audit).await?;
        // A sign-in voids the user's outstanding reset links: they remember the password.
        crate::mail_tokens::void(&mut tx, &session.user_id, crate::PASSWORD_RESET, session.created_at).await?;
        tx.commit().await?;
        Ok(PasswordSession::Opened)
    }

    /// The session of a token, if it is live at `now`: not revoked, not past its absolute end,
    /// and seen after `idle_cutoff`.
    pub async fn session(
        &self,
        token_hash: &[u8],
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> Result<Option<SessionRow>, StoreError> {
        self.live_session_by(token_column(false), token_hash, now, idle_cutoff).await
    }

    /// The live session whose `column` (`token_hash` or `forward_hash`) is `hash`.
    async fn live_session_by(
        &self,
        column: &'static str,
        hash: &[u8],
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> Result<Option<SessionRow>, StoreError> {
        Ok(sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions \
             WHERE {column} = $1 AND revoked_at IS NULL AND expires_at > $2 AND last_seen_at > $3"
        )))
        .bind(hash)
        .bind(to_millis(now))
        .bind(to_millis(idle_cutoff))
        .fetch_optional(&self.pool)
        .await?
        .map(SessionRow::from))
    }

    /// The live session (as [`Store::session`]) whose forward token (the domain-wide cookie of
    /// forward auth) hashes to `forward_hash`.
    pub async fn forward_session(
        &self,
        forward_hash: &[u8],
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> Result<Option<SessionRow>, StoreError> {
        self.live_session_by(token_column(true), forward_hash, now, idle_cutoff).await
    }

    /// Whether a session with this token (or, with `forward`, this forward token) exists at all,
    /// live or not: a token that is not live but is known belonged to a session that was
    /// revoked, expired or went idle.
    pub async fn session_known(&self, hash: &[u8], forward: bool) -> Result<bool, StoreError> {
        let sql = format!("SELECT COUNT(*) FROM sessions WHERE {} = $1", token_column(forward));
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(hash).fetch_one(&self.pool).await?;
        Ok(n > 0)
    }

    /// Give the live session `session_id` the forward token hashing to `forward_hash` (its
    /// earlier one, if any, stops working); `false` if the session is not live.
    pub async fn set_forward_hash(
        &self,
        session_id: &str,
        forward_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE sessions SET forward_hash = $2 WHERE id = $1 AND revoked_at IS NULL AND expires_at > $3",
        )
        .bind(session_id)
        .bind(forward_hash)
        .bind(to_millis(now))
        .execute(&mut *self.write().await?)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Record that a session was used at `now`, if its last-seen time is older than
    /// `older_than` (so a busy session costs one write a minute, not one per request).
    pub async fn touch_session(
        &self,
        session_id: &str,
        now: OffsetDateTime,
        older_than: OffsetDateTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sessions SET last_seen_at = $2 WHERE id = $1 AND last_seen_at <= $3 AND revoked_at IS NULL",
        )
        .bind(session_id)
        .bind(to_millis(now))
        .bind(to_millis(older_than))
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    /// Rotate a live session's token (see [`Rotation`]) and append `audit`, in one transaction;
    /// `false` (nothing written) if the session is not live.
    pub async fn rotate_session(
        &self,
        r: &Rotation<'_>,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        if !rotate(&mut tx, r, now, idle_cutoff).await? {
            return Ok(false);
        }
        audit::insert(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The user's live sessions, most recently used first.
    pub async fn sessions_of(
        &self,
        user_id: &str,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> Result<Vec<SessionRow>, StoreError> {
        Ok(sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions \
             WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 AND last_seen_at > $3 \
             ORDER BY last_seen_at DESC, id"
        )))
        .bind(user_id)
        .bind(to_millis(now))
        .bind(to_millis(idle_cutoff))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(SessionRow::from)
        .collect())
    }

    /// Revoke one session by its token; `false` if it was not live.
    pub async fn revoke_session(&self, token_hash: &[u8], now: OffsetDateTime) -> Result<bool, StoreError> {
        let n = sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE token_hash = $1 AND revoked_at IS NULL")
            .bind(token_hash)
            .bind(to_millis(now))
            .execute(&mut *self.write().await?)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Revoke one session of `user_id` by its id and append `audit`; `false` if there is no
    /// such live session of that user.
    pub async fn revoke_session_id(
        &self,
        user_id: &str,
        session_id: &str,
        now: OffsetDateTime,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let n =
            sqlx::query("UPDATE sessions SET revoked_at = $3 WHERE id = $2 AND user_id = $1 AND revoked_at IS NULL")
                .bind(user_id)
                .bind(session_id)
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

    /// Revoke every live session of a user; returns how many.
    /// Outstanding email-change links die with them: signing a user out everywhere is how an
    /// intrusion is answered, and a link the intruder asked for must not outlive it.
    pub async fn revoke_sessions_of(&self, user_id: &str, now: OffsetDateTime) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let n = revoke_others(&mut tx, user_id, None, now).await?;
        crate::mail_tokens::void(&mut tx, user_id, crate::EMAIL_CHANGE, now).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Revoke every live session of every user; returns how many.
    pub async fn revoke_all_sessions(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        Ok(sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE revoked_at IS NULL AND expires_at > $1")
            .bind(to_millis(now))
            .execute(&mut *self.write().await?)
            .await?
            .rows_affected())
    }

    /// Revoke every live session of a user but `keep` (a session id), void the user's
    /// outstanding email-change links (as [`Store::revoke_sessions_of`]), and append `audit`;
    /// returns how many sessions ended.
    pub async fn revoke_other_sessions(
        &self,
        user_id: &str,
        keep: &str,
        now: OffsetDateTime,
        audit: &NewAuditEvent,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let n = revoke_others(&mut tx, user_id, Some(keep), now).await?;
        crate::mail_tokens::void(&mut tx, user_id, crate::EMAIL_CHANGE, now).await?;
        audit::insert(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Remember that a browser completed a sign-in of `user_id` under a freshly minted
    /// known-browser token (its hash `new_hash`), forgetting the token it presented (`old_hash`),
    /// in one transaction: a token is recorded only when the server minted it, so a value planted
    /// in a victim's browser never becomes theirs.
    ///
    /// Returns what the browser was to the user before: known (it presented a token of theirs
    /// seen in the last 400 days), new, or the user's first browser ever.
    pub async fn remember_browser(
        &self,
        user_id: &str,
        new_hash: &[u8],
        old_hash: Option<&[u8]>,
        now: OffsetDateTime,
    ) -> Result<BrowserSeen, StoreError> {
        let mut tx = self.begin().await?;
        let since = to_millis(now - time::Duration::days(400));
        let (known, any): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(CASE WHEN token_hash = $2 THEN 1 ELSE 0 END), 0), COUNT(*) \
             FROM known_browsers WHERE user_id = $1 AND last_seen_at > $3",
        )
        .bind(user_id)
        .bind(old_hash.unwrap_or_default())
        .bind(since)
        .fetch_one(&mut *tx)
        .await?;
        let seen = match (known, any) {
            (k, _) if k > 0 => BrowserSeen::Known,
            (_, 0) => BrowserSeen::First,
            _ => BrowserSeen::New,
        };
        if let Some(old) = old_hash {
            sqlx::query("DELETE FROM known_browsers WHERE user_id = $1 AND token_hash = $2")
                .bind(user_id)
                .bind(old)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO known_browsers (user_id, token_hash, created_at, last_seen_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (user_id, token_hash) DO UPDATE SET last_seen_at = excluded.last_seen_at",
        )
        .bind(user_id)
        .bind(new_hash)
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?;
        // Keep the user's 50 most recent browsers of the last 400 days.
        sqlx::query(
            "DELETE FROM known_browsers WHERE user_id = $1 AND (last_seen_at <= $2 OR token_hash NOT IN \
             (SELECT token_hash FROM known_browsers WHERE user_id = $1 ORDER BY last_seen_at DESC LIMIT 50))",
        )
        .bind(user_id)
        .bind(since)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(seen)
    }

    /// Whether a browser completed a sign-in of `user_id` since `since`.
    pub async fn is_known_browser(
        &self,
        user_id: &str,
        token_hash: &[u8],
        since: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM known_browsers WHERE user_id = $1 AND token_hash = $2 AND last_seen_at > $3",
        )
        .bind(user_id)
        .bind(token_hash)
        .bind(to_millis(since))
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }
}
