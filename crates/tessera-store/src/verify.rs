//! A code's verification, as the store runs it: check, gate, replay guard, reset, audit.
//!
//! The app checks a code against the subject's active TOTP devices (its check unseals and
//! computes; it has no effect); the store reserves an attempt at the gate and — only if the
//! gate admits it (not locked, slot within the budget) and the check matched — accepts the
//! code: the replay guard (which stamps the device's last use), the counters' reset and the
//! acceptance's audit row. The check's result counts only when the gate admits the attempt,
//! so the bound on guesses is the gate's, as when gating first. See `docs/ARCHITECTURE.md`
//! ("Verification") for why the check comes first.
//!
//! - **SQLite**: one job of the writer thread's batch (`batch`): the device read, the check and
//!   the writes in one transaction, without a hop between them.
//! - **PostgreSQL**: the subject's sealed devices come from a bounded in-memory cache
//!   ([`DeviceCache`]), and the gate, the guard, the counters and the audit row are one
//!   autocommitted statement ([`VERIFY_PG`]): one round trip. The statement re-checks what the
//!   cache could have got wrong: the subject's device version (bumped by a trigger in the
//!   transaction of every change to the subject's TOTP devices, migration postgres 0011) must
//!   be the cache's, and the matched device must still be active with the same sealed secret.
//!   If not, it writes nothing and says so; the devices are then read again and the code
//!   checked again. They are never read again merely because a code missed: a wrong code and
//!   a right one cost the same work, so time reveals nothing.

use crate::attempts::{GateResult, admits};
use crate::audit::insert_sqlite;
use crate::sql::{
    self, AUDIT_COLUMNS, Acceptance, CLEAR, DeviceRow, NOT_CLEAR, SECOND_FACTOR, TotpDevice, count_failure, open,
    u32_of, unused_step,
};
use crate::{Store, StoreError};
use rusqlite::{Connection, named_params};
use sqlx::{AnyConnection, AssertSqlSafe};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use tessera_core::clock::to_millis;
use tessera_core::throttle::ThrottlePolicy;
use time::OffsetDateTime;

/// What [`Store::check_gate_accept`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateAccept {
    /// The gate refused the attempt — locked (`GateResult::Locked`), or its slot is beyond
    /// the budget (`GateResult::Reserved`): the code was not considered.
    Refused(GateResult),
    /// The code was accepted (and is now used).
    Accepted,
    /// The code matched but its step was already used (slot `n` stays a failure).
    Replayed(u32),
    /// No match, or nothing to accept (slot `n` stays a failure).
    Mismatch(u32),
}

/// A verification's result: what the gate and the guard said, and the device the check matched.
pub type Verified = (GateAccept, Option<String>);

/// What the writes of a verification answered: the gate's slot (`None`: locked) and, if the
/// check matched and the gate admitted it, whether the replay guard let the step through.
#[derive(Debug, Clone, Copy)]
struct Written {
    reserved: Option<i64>,
    accepted: Option<bool>,
}

impl Store {
    /// Verify a code: run `check` on the subject's active TOTP devices (it must only compute:
    /// quick, without waiting; on SQLite it runs on the writer thread, on PostgreSQL it may run
    /// more than once if the devices change meanwhile), then the gate and, if it admits the
    /// attempt and the check matched, the accept (see the module's documentation). The check's
    /// own error comes back as the inner `Err`, with nothing written.
    pub async fn check_gate_accept<E, F>(
        &self,
        subject_id: &str,
        now: OffsetDateTime,
        policy: &ThrottlePolicy,
        check: F,
    ) -> Result<Result<Verified, E>, StoreError>
    where
        E: Send + 'static,
        F: Fn(&[TotpDevice]) -> Result<Option<Acceptance>, E> + Send + 'static,
    {
        let now_ms = to_millis(now);
        let (written, matched) = match &self.batcher {
            Some(b) => {
                let (subject, policy) = (subject_id.to_owned(), *policy);
                match b.run(move |c| verify_sqlite(c, &subject, now_ms, &policy, &check)).await? {
                    Ok(r) => r,
                    Err(e) => return Ok(Err(e)),
                }
            }
            None => match self.verify_pg(subject_id, now_ms, policy, &check).await? {
                Ok(r) => r,
                Err(e) => return Ok(Err(e)),
            },
        };
        let result = match (written.reserved, written.accepted) {
            (None, _) => {
                GateAccept::Refused(GateResult::Locked(self.locked_until(subject_id, SECOND_FACTOR, now).await?))
            }
            (Some(n), _) if !admits(policy, n) => GateAccept::Refused(GateResult::Reserved(u32_of(n))),
            (Some(_), Some(true)) => GateAccept::Accepted,
            (Some(n), Some(false)) => GateAccept::Replayed(u32_of(n)),
            (Some(n), None) => GateAccept::Mismatch(u32_of(n)),
        };
        Ok(Ok((result, matched)))
    }

    /// PostgreSQL: the check on the cached devices, then [`VERIFY_PG`]; the devices are read
    /// again only when the statement says the cache is stale.
    async fn verify_pg<E, F>(
        &self,
        subject_id: &str,
        now_ms: i64,
        policy: &ThrottlePolicy,
        check: &F,
    ) -> Result<Result<(Written, Option<String>), E>, StoreError>
    where
        F: Fn(&[TotpDevice]) -> Result<Option<Acceptance>, E>,
    {
        let mut cached = self.devices.get(subject_id);
        // Each stale answer means a change to the devices committed meanwhile: a few in a row
        // would take someone changing them continuously.
        for _ in 0..4 {
            let (entry, from_cache) = match cached.take() {
                Some(e) => (e, true),
                None => {
                    let e = Arc::new(self.read_versioned(subject_id).await?);
                    self.devices.put(subject_id, e.clone());
                    (e, false)
                }
            };
            let accept = match check(&entry.devices) {
                Ok(a) => a,
                // A cached secret the check cannot open (sealed under a key since retired, once
                // every row was re-sealed): read the devices again before failing.
                Err(_) if from_cache => continue,
                Err(e) => return Ok(Err(e)),
            };
            let nonce = accept.as_ref().and_then(|a| {
                entry.devices.iter().find(|d| d.factor.id == a.factor_id).map(|d| d.sealed.nonce.clone())
            });
            let mut conn = self.write().await?;
            match verify_pg(&mut conn, subject_id, now_ms, policy, accept.as_ref(), entry.version, nonce).await? {
                Some(reserved) => {
                    let accepted = match (reserved.0, &accept) {
                        (Some(n), Some(_)) if admits(policy, n) => Some(reserved.1),
                        _ => None,
                    };
                    let matched = accept.map(|a| a.factor_id);
                    return Ok(Ok((Written { reserved: reserved.0, accepted }, matched)));
                }
                None => metrics::counter!("tessera_device_cache_stale_total").increment(1),
            }
        }
        Err(StoreError::Busy("the subject's devices kept changing during a verification".into()))
    }

    /// PostgreSQL: the subject's device version, then its active devices. The version is read
    /// first, so a change committed between the two reads leaves the entry with an older
    /// version than its devices: stale, and read again at its first use, never taken for
    /// fresh.
    async fn read_versioned(&self, subject_id: &str) -> Result<CachedDevices, StoreError> {
        let version = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql::DEVICE_VERSION.as_str()))
            .bind(subject_id)
            .fetch_optional(&self.pool)
            .await?
            .unwrap_or(0);
        let devices = sqlx::query_as::<_, DeviceRow>(AssertSqlSafe(sql::ACTIVE_DEVICES.as_str()))
            .bind(subject_id)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(TotpDevice::try_from)
            .collect::<Result<_, _>>()?;
        Ok(CachedDevices { version, devices })
    }
}

/// SQLite, on the writer thread: read the devices, check, gate, then accept if admitted and
/// matched. A corrupt row or the check's error fails this job only, before any write.
#[allow(clippy::type_complexity)]
fn verify_sqlite<E, F>(
    conn: &Connection,
    subject: &str,
    now_ms: i64,
    policy: &ThrottlePolicy,
    check: &F,
) -> rusqlite::Result<Result<Result<(Written, Option<String>), E>, StoreError>>
where
    F: Fn(&[TotpDevice]) -> Result<Option<Acceptance>, E>,
{
    let rows = conn
        .prepare_cached(&sql::ACTIVE_DEVICES)?
        .query_map(named_params! { "$1": subject }, DeviceRow::from_sqlite)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let devices = match rows.into_iter().map(TotpDevice::try_from).collect::<Result<Vec<_>, _>>() {
        Ok(d) => d,
        Err(e) => return Ok(Err(e)),
    };
    let acceptance = match check(&devices) {
        Ok(a) => a,
        Err(e) => return Ok(Ok(Err(e))),
    };
    let matched = acceptance.as_ref().map(|a| a.factor_id.clone());
    let reserved = crate::attempts::gate_sqlite(conn, subject, SECOND_FACTOR, now_ms, policy.budget())?;
    let admitted = reserved.is_some_and(|n| admits(policy, n));
    let accepted = match &acceptance {
        Some(a) if admitted => Some(accept_sqlite(conn, subject, a, now_ms)?),
        _ => None,
    };
    Ok(Ok(Ok((Written { reserved, accepted }, matched))))
}

/// SQLite: accept a matched code — the replay guard first, and only if it let the step
/// through, the reset and the audit row (so a refused guard writes nothing more).
fn accept_sqlite(conn: &Connection, subject: &str, a: &Acceptance, now_ms: i64) -> rusqlite::Result<bool> {
    let won = conn
        .prepare_cached(&sql::REPLAY_GUARD)?
        .execute(named_params! { "$1": a.factor_id, "$2": sql::step_i64(a.step), "$3": now_ms })?
        == 1;
    if won {
        crate::attempts::reset_sqlite(conn, subject, SECOND_FACTOR)?;
        insert_sqlite(conn, &a.audit)?;
    }
    Ok(won)
}

/// PostgreSQL's verification statement (`$1` subject, `$2` the counter kind, `$3` now, `$4`
/// the budget, `$5` the matched device or NULL, `$6` its step, `$7`–`$13` the audit row, `$14`
/// the cache's device version, `$15` the matched device's nonce as cached).
///
/// It locks the subject's counters row first (`cur`, `FOR UPDATE`: concurrent attempts on one
/// subject queue here, each seeing the count the one before left, and a change to the devices,
/// which locks it first too, is either all before or all after). `ok` holds only if the cache
/// is current: the version is the cache's and the matched device is still active with the
/// cached secret; otherwise nothing is written. Then, only if the subject is not locked and
/// the slot (count + 1) is within the budget, the replay guard (`g`); then the reset if the
/// guard won and the row is not clear already, else one more failure (nothing while locked);
/// and the acceptance's audit row if the guard won. Lock order: counters, then secret — the
/// order of every transaction that changes a subject's devices.
pub(crate) static VERIFY_PG: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH cur AS ( \
           SELECT consecutive_failures + 1 AS n, {open} AS open, device_version = $14 AS fresh \
           FROM attempts WHERE subject_id = $1 AND kind = $2 FOR UPDATE \
         ), ok AS ( \
           SELECT n, open FROM cur WHERE fresh AND ($5::text IS NULL OR EXISTS ( \
             SELECT 1 FROM factors f JOIN totp_secrets s ON s.factor_id = f.id \
             WHERE f.id = $5 AND f.subject_id = $1 AND f.status = 'active' AND f.disabled_at IS NULL \
               AND s.nonce = $15)) \
         ), g AS ( \
           UPDATE totp_secrets SET last_used_step = $6, last_used_at = $3 \
           WHERE factor_id = $5 AND {unused} AND EXISTS (SELECT 1 FROM ok WHERE open AND n <= $4) \
           RETURNING factor_id \
         ), won AS (SELECT EXISTS (SELECT 1 FROM g) AS w), \
         reset AS ( \
           UPDATE attempts SET {CLEAR} WHERE subject_id = $1 AND kind = $2 AND (SELECT w FROM won) AND {NOT_CLEAR} \
         ), fail AS ( \
           UPDATE attempts SET {fail} WHERE subject_id = $1 AND kind = $2 AND NOT (SELECT w FROM won) \
             AND EXISTS (SELECT 1 FROM ok WHERE open) \
         ), a AS ( \
           INSERT INTO audit_events ({AUDIT_COLUMNS}) SELECT $7, $8, $1, $5, $9, $10, $11, $12, $13 FROM g \
         ) SELECT EXISTS (SELECT 1 FROM cur), EXISTS (SELECT 1 FROM ok), \
              COALESCE((SELECT open FROM cur), FALSE), COALESCE((SELECT n FROM cur), 0), (SELECT w FROM won)",
        open = open("$3"),
        unused = unused_step("$6"),
        fail = count_failure("$4"),
    )
});

/// Run [`VERIFY_PG`]: `None` if the cache was stale (nothing written), else the slot the
/// attempt held (`None` while locked) and whether the guard won. A subject's first attempt
/// finds no counters row: the statement then changes nothing, the row is created and the
/// statement runs again (no row is ever deleted).
async fn verify_pg(
    conn: &mut AnyConnection,
    subject_id: &str,
    now_ms: i64,
    policy: &ThrottlePolicy,
    accept: Option<&Acceptance>,
    version: i64,
    nonce: Option<Vec<u8>>,
) -> Result<Option<(Option<i64>, bool)>, StoreError> {
    let ev = accept.map(|a| &a.audit);
    for first_run in [true, false] {
        let row: (bool, bool, bool, i64, bool) = sqlx::query_as(AssertSqlSafe(VERIFY_PG.as_str()))
            .bind(subject_id)
            .bind(SECOND_FACTOR)
            .bind(now_ms)
            .bind(i64::from(policy.budget()))
            .bind(accept.map(|a| a.factor_id.as_str()))
            .bind(accept.map(|a| sql::step_i64(a.step)))
            .bind(accept.map(|_| uuid::Uuid::now_v7().to_string()))
            .bind(ev.map(|e| to_millis(e.at)))
            .bind(ev.and_then(|e| e.actor.as_deref()))
            .bind(ev.map(|e| e.kind.as_str()))
            .bind(ev.and_then(|e| e.ip.as_deref()))
            .bind(ev.and_then(|e| e.user_agent.as_deref()))
            .bind(ev.map(|e| e.detail.as_str()))
            .bind(version)
            .bind(nonce.clone())
            .fetch_one(&mut *conn)
            .await?;
        let (had_row, ok, open, n, won) = row;
        if had_row {
            return Ok(ok.then_some((open.then_some(n), won)));
        }
        if first_run {
            crate::attempts::lock_row(conn, subject_id, SECOND_FACTOR).await?;
        }
    }
    Err(StoreError::Corrupt("the attempts row vanished".into()))
}

/// A subject's active TOTP devices (sealed) as read, with their version.
#[derive(Debug)]
pub(crate) struct CachedDevices {
    version: i64,
    devices: Vec<TotpDevice>,
}

/// PostgreSQL: the subjects' sealed devices, bounded by subject: two generations of at most
/// half the capacity each; a hit in the older one moves to the newer, and when the newer is
/// full the older is dropped (an approximation of least-recently-used, with O(1) work and one
/// short lock). A capacity of 0 caches nothing. It holds sealed secrets only (the keys are the
/// app's), and no entry is trusted: the statement re-checks it.
pub(crate) struct DeviceCache {
    half: usize,
    gens: Mutex<Generations>,
}

impl std::fmt::Debug for DeviceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCache").field("capacity", &(2 * self.half)).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Generations {
    young: HashMap<String, Arc<CachedDevices>>,
    old: HashMap<String, Arc<CachedDevices>>,
}

impl DeviceCache {
    /// A cache of at most `capacity` subjects.
    pub(crate) fn new(capacity: usize) -> Self {
        Self { half: capacity / 2, gens: Mutex::new(Generations::default()) }
    }

    fn get(&self, subject: &str) -> Option<Arc<CachedDevices>> {
        if self.half == 0 {
            return None;
        }
        let mut g = self.gens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(e) = g.young.get(subject) {
            return Some(e.clone());
        }
        let e = g.old.remove(subject)?;
        g.insert(self.half, subject, e.clone());
        Some(e)
    }

    fn put(&self, subject: &str, entry: Arc<CachedDevices>) {
        if self.half == 0 {
            return;
        }
        let mut g = self.gens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Versions only grow: never replace a newer read by an older one.
        if g.young.get(subject).or_else(|| g.old.get(subject)).is_some_and(|e| e.version > entry.version) {
            return;
        }
        g.old.remove(subject);
        g.insert(self.half, subject, entry);
    }

    /// Subjects cached (for tests and metrics).
    #[cfg(test)]
    fn len(&self) -> usize {
        let g = self.gens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        g.young.len() + g.old.len()
    }
}

impl Generations {
    fn insert(&mut self, half: usize, subject: &str, entry: Arc<CachedDevices>) {
        if self.young.len() >= half && !self.young.contains_key(subject) {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(subject.to_owned(), entry);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_device_cache_is_bounded_and_keeps_what_is_used() {
        let c = DeviceCache::new(4);
        let e = |v| Arc::new(CachedDevices { version: v, devices: Vec::new() });
        for s in ["a", "b", "c", "d", "e"] {
            c.put(s, e(1));
            assert!(c.len() <= 4);
        }
        // "a" and "b" were dropped with the older generation; "e" is the newest.
        assert!(c.get("a").is_none() && c.get("e").is_some());
        // A hit in the older generation survives the next turnover.
        assert!(c.get("c").is_some());
        c.put("f", e(1));
        c.put("g", e(1));
        assert!(c.get("c").is_some(), "a subject in use stays");
        assert!(c.len() <= 4);
        // An older read never replaces a newer one.
        c.put("g", e(5));
        c.put("g", e(3));
        assert_eq!(c.get("g").unwrap().version, 5);
        // Capacity 0: nothing is kept.
        let none = DeviceCache::new(0);
        none.put("a", e(1));
        assert!(none.get("a").is_none());
    }
}
