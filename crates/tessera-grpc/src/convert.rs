//! Domain ⇄ wire conversions. The only place protobuf and domain types meet.

use tessera_app::{ClientContext, Outcome};
use tessera_core::factor::{Factor, FactorStatus};
use tessera_core::otp::Algorithm;
use tessera_proto::v1 as pb;
use time::OffsetDateTime;

pub(crate) fn ts(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.unix_timestamp(), nanos: i32::try_from(t.nanosecond()).unwrap_or(0) }
}

pub(crate) fn ctx(c: Option<pb::ClientContext>) -> ClientContext {
    let c = c.unwrap_or_default();
    ClientContext {
        ip: (!c.ip.is_empty()).then_some(c.ip),
        user_agent: (!c.user_agent.is_empty()).then_some(c.user_agent),
        browser: (!c.browser_token.is_empty()).then_some(c.browser_token),
        // ("Trust this browser" is the pages' for now.)
        trust: None,
    }
}

pub(crate) fn algorithm(a: i32) -> Result<Option<Algorithm>, tonic::Status> {
    match pb::Algorithm::try_from(a) {
        Ok(pb::Algorithm::Unspecified) => Ok(None),
        Ok(pb::Algorithm::Sha1) => Ok(Some(Algorithm::Sha1)),
        Ok(pb::Algorithm::Sha256) => Ok(Some(Algorithm::Sha256)),
        Ok(pb::Algorithm::Sha512) => Ok(Some(Algorithm::Sha512)),
        Err(_) => Err(tonic::Status::invalid_argument(format!("algorithm: {a} is not a known Algorithm value"))),
    }
}

/// Factor ids are UUIDs; anything else is malformed input, not an unknown factor.
pub(crate) fn factor_id(s: &str) -> Result<String, tonic::Status> {
    uuid::Uuid::parse_str(s)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| tonic::Status::invalid_argument("factor_id: must be a UUID as returned by EnrollTotp"))
}

pub(crate) fn factor(f: Factor) -> pb::Factor {
    pb::Factor {
        id: f.id,
        kind: f.kind.as_str().to_owned(),
        label: f.label,
        status: match f.status {
            FactorStatus::Pending => pb::FactorStatus::Pending,
            FactorStatus::Active => pb::FactorStatus::Active,
        } as i32,
        created_at: Some(ts(f.created_at)),
        confirmed_at: f.confirmed_at.map(ts),
        last_used_at: f.last_used_at.map(ts),
        disabled_at: f.disabled_at.map(ts),
    }
}

pub(crate) fn verify_response(o: Outcome, recovery_left: u32) -> pb::VerifyResponse {
    let mut r = pb::VerifyResponse { recovery_codes_remaining: recovery_left, ..Default::default() };
    match o {
        Outcome::Accepted { factor_id } => {
            r.outcome = pb::Outcome::Accepted as i32;
            r.factor_id = factor_id.unwrap_or_default();
        }
        Outcome::Rejected { attempts_remaining } => {
            r.outcome = pb::Outcome::Rejected as i32;
            r.attempts_remaining = attempts_remaining;
        }
        Outcome::Locked { until } => {
            r.outcome = pb::Outcome::Locked as i32;
            r.locked_until = Some(ts(until));
        }
    }
    r
}

pub(crate) fn outcome_label(o: &Outcome) -> &'static str {
    match o {
        Outcome::Accepted { .. } => "accepted",
        Outcome::Rejected { .. } => "rejected",
        Outcome::Locked { .. } => "locked",
    }
}
