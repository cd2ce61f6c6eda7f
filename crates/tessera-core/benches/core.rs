//! Criterion benchmarks of the core's hot paths, beside a bare keyed-HMAC baseline measured
//! in the same run: `cargo bench -p tessera-core`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{Hmac, KeyInit, Mac};
use std::hint::black_box;
use tessera_core::otp::{self, Algorithm, Code, Secret, TotpParams, Window};
use tessera_core::recovery::RecoveryCode;
use tessera_core::seal::{Aad, Keyring};

const T: i64 = 1_767_225_610;

fn bench(c: &mut Criterion) {
    let secret = Secret::generate(Algorithm::Sha1).unwrap();
    let params = TotpParams::default();
    let step = params.step_at(T);

    // Baseline: what verify cannot avoid — key HMAC-SHA1 once, then three HMACs (t-1, t, t+1).
    c.bench_function("baseline/hmac_sha1_key_plus_3", |b| {
        b.iter(|| {
            let keyed = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(black_box(secret.expose())).unwrap();
            let mut acc = 0u8;
            for s in step - 1..=step + 1 {
                let mut m = keyed.clone();
                m.update(&s.to_be_bytes());
                acc ^= m.finalize().into_bytes()[19];
            }
            black_box(acc)
        })
    });
    let keyed = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret.expose()).unwrap();
    c.bench_function("baseline/hmac_sha1_prekeyed_1", |b| {
        b.iter(|| {
            let mut m = keyed.clone();
            m.update(&black_box(step).to_be_bytes());
            black_box(m.finalize().into_bytes())
        })
    });

    // A wrong code: the whole window is computed and compared (the same work as a match).
    let wrong = Code::parse("000000").unwrap();
    c.bench_function("verify/window_pm1_sha1", |b| {
        b.iter(|| black_box(otp::verify(&secret, &params, black_box(&wrong), black_box(T), Window::default())))
    });
    let good = Code::parse(&otp::format_code(otp::totp(&secret, &params, T), 6)).unwrap();
    c.bench_function("verify/window_pm1_sha1_match", |b| {
        b.iter(|| black_box(otp::verify(&secret, &params, black_box(&good), black_box(T), Window::default())))
    });

    let keyring = Keyring::generate().unwrap();
    let aad = Aad { purpose: "totp-secret", version: 1, factor_id: "0b5f8c1e-factor", subject_id: "user-42" };
    c.bench_function("seal/xchacha20poly1305_20B", |b| {
        b.iter(|| black_box(keyring.seal(&aad, black_box(secret.expose())).unwrap()))
    });
    let sealed = keyring.seal(&aad, secret.expose()).unwrap();
    c.bench_function("open/xchacha20poly1305_20B", |b| {
        b.iter(|| black_box(keyring.open(&aad, black_box(&sealed)).unwrap()))
    });

    // The core of a recovery-code redeem: normalise what was typed and MAC it (the store
    // then does one indexed UPDATE).
    let code = RecoveryCode::generate().unwrap().display();
    let key = keyring.current_id();
    c.bench_function("recovery/parse_and_mac", |b| {
        b.iter(|| {
            let rc = RecoveryCode::parse(black_box(&code)).unwrap();
            black_box(rc.mac(&keyring, &key, "user-42").unwrap())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
