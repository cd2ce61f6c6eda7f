//! What a security key costs the server: `cargo bench -p tessera-app`. Each iteration finishes
//! one assertion ceremony (take the ceremony, verify the P-256 signature and client data with
//! webauthn-rs, record the counter and the audit row) on a SQLite file; the ceremony is begun
//! and the software authenticator signs outside the measured part. Beside it, the begin (the
//! options and the ceremony row), and the TOTP check of the same app for comparison.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use tessera_app::{ConfirmOutcome, EnrollRequest, KeyOutcome};
use tessera_core::factor::FactorKind;
use tessera_testkit::{Harness, SoftKey, ctx};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let h = rt.block_on(Harness::sqlite(Default::default()));
    let subject = uuid::Uuid::new_v4().to_string();
    let mut key = SoftKey::new("http://localhost:8080");
    rt.block_on(async {
        let b = h.app.begin_webauthn_registration(&subject, "Key", FactorKind::SecurityKey, "bench").await.unwrap();
        let answer = key.register(&b.options);
        h.app.finish_webauthn_registration(&subject, &b.id, &answer, &ctx()).await.unwrap();
    });

    c.bench_function("webauthn/begin_assertion", |b| {
        b.iter(|| black_box(rt.block_on(h.app.begin_webauthn_assertion(&subject)).unwrap()))
    });
    c.bench_function("webauthn/finish_assertion", |b| {
        b.iter_batched(
            || {
                let begun = rt.block_on(h.app.begin_webauthn_assertion(&subject)).unwrap();
                let answer = key.assert(&begun.options);
                (begun.id, answer)
            },
            |(id, answer)| {
                let o = rt.block_on(h.app.finish_webauthn_assertion(&subject, &id, &answer, &ctx())).unwrap();
                assert!(matches!(o, KeyOutcome::Accepted { .. }));
            },
            BatchSize::SmallInput,
        )
    });

    // The same app's TOTP check, for scale (a fresh step each time: the clock moves 30 s).
    let totp_subject = uuid::Uuid::new_v4().to_string();
    let req = EnrollRequest {
        subject_id: totp_subject.clone(),
        label: "Phone".into(),
        account_name: "b".into(),
        ..Default::default()
    };
    let secret = rt.block_on(async {
        let e = h.app.enroll_totp(&req, &ctx()).await.unwrap();
        let code = h.code(&e.secret_base32, 0);
        let confirmed = h.app.confirm_totp(&totp_subject, &e.factor_id, &code, &ctx()).await.unwrap();
        assert!(matches!(confirmed, ConfirmOutcome::Confirmed { .. }));
        e.secret_base32.to_string()
    });
    c.bench_function("totp/verify_accepted", |b| {
        b.iter_batched(
            || {
                h.clock.advance(time::Duration::seconds(30));
                h.code(&secret, 0)
            },
            |code| black_box(rt.block_on(h.app.verify_totp(&totp_subject, &code, &ctx())).unwrap()),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
