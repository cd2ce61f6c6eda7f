//! Recovery codes: each works once, even under concurrency, and regenerating voids the old batch.

use crate::{accepted, active_device};
use tessera_app::{AppError, Outcome};
use tessera_core::CoreError;
use tessera_testkit::{Harness, both, ctx};

async fn concurrent_redeems_accept_one(h: &Harness) {
    let (_, codes) = active_device(h, "dave").await;
    let code = codes[3].clone();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let app = h.app.clone();
        let code = code.clone();
        tasks.push(tokio::spawn(async move { app.redeem_recovery_code("dave", &code, &ctx()).await }));
    }
    let mut wins = 0;
    for t in tasks {
        let (o, _) = t.await.unwrap().unwrap();
        wins += usize::from(accepted(&o));
    }
    assert_eq!(wins, 1, "exactly one of 16 concurrent redeems of one code is accepted");
    assert_eq!(h.app.recovery_codes_remaining("dave").await.unwrap(), 9);
}
both!(
    concurrent_redeems_accept_one,
    tessera_app::AppConfig {
        throttle: tessera_core::throttle::ThrottlePolicy { max_failures: 100, ..Default::default() },
        ..Default::default()
    }
);

async fn recovery_codes_work_once_and_regenerate(h: &Harness) {
    let (_, codes) = active_device(h, "erin").await;
    assert_eq!(codes.len(), 10);
    // typed sloppily: lower case, spaces, O for 0
    let sloppy = codes[0].to_lowercase().replace('-', " ").replace('0', "o");
    let (o, left) = h.app.redeem_recovery_code("erin", &sloppy, &ctx()).await.unwrap();
    assert!(accepted(&o));
    assert_eq!(left, 9);
    let (o, left) = h.app.redeem_recovery_code("erin", &codes[0], &ctx()).await.unwrap();
    assert!(matches!(o, Outcome::Rejected { .. }), "used once");
    assert_eq!(left, 9);
    // another subject's code is worthless here
    let (_, other) = active_device(h, "frank").await;
    assert!(!accepted(&h.app.redeem_recovery_code("erin", &other[1], &ctx()).await.unwrap().0));
    // regenerating voids the old batch
    let fresh = h.app.regenerate_recovery_codes("erin", &ctx()).await.unwrap();
    assert_eq!(fresh.len(), 10);
    assert!(!accepted(&h.app.redeem_recovery_code("erin", &codes[1], &ctx()).await.unwrap().0));
    let (o, left) = h.app.redeem_recovery_code("erin", &fresh[9], &ctx()).await.unwrap();
    assert!(accepted(&o));
    assert_eq!(left, 9);
    // malformed codes are errors, not outcomes
    assert!(matches!(
        h.app.redeem_recovery_code("erin", "short", &ctx()).await,
        Err(AppError::Invalid(CoreError::Invalid { field: "recovery_code", .. }))
    ));
    // no active factor: nothing to back up
    assert!(matches!(h.app.regenerate_recovery_codes("nobody", &ctx()).await, Err(AppError::FailedPrecondition(_))));
}
both!(recovery_codes_work_once_and_regenerate);

/// The two rules of recovery codes and factors, decided in the app: the first active factor
/// brings a batch; a second factor leaves it alone; removing a factor keeps the codes while
/// another active factor remains, and removing the last one voids them.
async fn codes_follow_the_first_and_the_last_factor(h: &Harness) {
    let (first, codes) = active_device(h, "gus").await;
    assert_eq!(codes.len(), 10, "the first factor brings codes");
    let (second, more) = active_device(h, "gus").await;
    assert!(more.is_empty(), "a second factor brings none");
    let (o, left) = h.app.redeem_recovery_code("gus", &codes[0], &ctx()).await.unwrap();
    assert!(accepted(&o), "the first batch still stands after the second factor");
    assert_eq!(left, 9);
    h.app.remove_factor("gus", &first.factor_id, &ctx()).await.unwrap();
    assert_eq!(h.app.recovery_codes_remaining("gus").await.unwrap(), 9, "another factor remains");
    h.app.remove_factor("gus", &second.factor_id, &ctx()).await.unwrap();
    assert_eq!(h.app.recovery_codes_remaining("gus").await.unwrap(), 0, "the last factor took them");
    assert!(!accepted(&h.app.redeem_recovery_code("gus", &codes[1], &ctx()).await.unwrap().0));
}
both!(codes_follow_the_first_and_the_last_factor);

/// Two removals racing for a subject's last two factors (a gRPC subject: no user row to lock)
/// are serialised on the subject's counters row: the second sees no factor left and voids the
/// codes. Without that, each could count the other's factor and leave codes with no factor.
async fn racing_removals_of_the_last_two_factors_void_the_codes(h: &Harness) {
    for round in 0..5 {
        let subject = format!("race-{round}");
        let (a, codes) = active_device(h, &subject).await;
        let (b, _) = active_device(h, &subject).await;
        assert_eq!(codes.len(), 10);
        let removal = |factor_id: String| {
            let (app, subject) = (h.app.clone(), subject.clone());
            tokio::spawn(async move { app.remove_factor(&subject, &factor_id, &ctx()).await })
        };
        let (ra, rb) = (removal(a.factor_id), removal(b.factor_id));
        ra.await.unwrap().unwrap();
        rb.await.unwrap().unwrap();
        assert_eq!(h.app.recovery_codes_remaining(&subject).await.unwrap(), 0, "round {round}");
    }
}
both!(racing_removals_of_the_last_two_factors_void_the_codes);
