//! End-to-end tests of the gRPC service on real sockets: the in-process server (as `tessera
//! serve` runs it, with a manual clock) and the real binary (shutdown, two replicas).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tessera_client::{Client, ClientError, Verification, pb};
use tessera_core::clock::{Clock, ManualClock, SystemClock};
use tessera_server::{ConfigFile, Listeners, ServerConfig};
use tessera_testkit::{PgDatabase, Serve, code_at, loud, test_clock};
use tonic::Code;

const TOKEN: &str = "test-service-token-0123456789";
const SUPPORT: &str = "test-support-token-0123456789";
struct InProcess {
    grpc: SocketAddr,
    http: SocketAddr,
    admin: SocketAddr,
    clock: ManualClock,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    /// The server's data directory (its mailbox is `mail/`).
    dir: tempfile::TempDir,
}

impl InProcess {
    /// The code in the newest invitation mail to `email`, read from the mailbox (the `.eml`
    /// files the server writes without an SMTP relay).
    async fn mailed_code(&self, email: &str) -> String {
        let mail = tessera_testkit::wait_for_mail(&self.dir.path().join("mail"), email, "You are invited").await;
        mail.text.lines().find_map(|l| l.strip_prefix("    ")).expect("a code line").trim().to_owned()
    }

    async fn start(database_url: Option<String>) -> Self {
        Self::start_with(ConfigFile { database_url, ..Default::default() }).await
    }

    async fn start_with(given: ConfigFile) -> Self {
        Self::start_cfg(given, |_| {}).await
    }

    /// As `start_with`, with `tweak` applied to the resolved configuration.
    async fn start_cfg(given: ConfigFile, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let given =
            ConfigFile { data_dir: Some(dir.path().to_owned()), pwned_mode: Some("off".into()), ..Default::default() }
                .or(given)
                .unwrap();
        let mut cfg = ServerConfig::resolve_with_support(given, Some(TOKEN.into()), Some(SUPPORT.into())).unwrap();
        tweak(&mut cfg);
        let clock = test_clock();
        let prepared = tessera_server::prepare(&cfg, Some(Arc::new(clock.clone()))).await.unwrap();
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (ga, ha, aa) = (grpc.local_addr().unwrap(), http.local_addr().unwrap(), admin.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tessera_server::run(Listeners { grpc, http, admin }, prepared, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self { grpc: ga, http: ha, admin: aa, clock, stop: Some(tx), task, dir }
    }

    async fn client(&self, token: &str) -> Client {
        Client::connect(&format!("http://{}", self.grpc), token, Default::default()).await.unwrap()
    }

    fn code(&self, secret: &str, steps: i64) -> String {
        code_at(secret, self.clock.now().unix_timestamp() + 30 * steps)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

fn enroll(subject: &str) -> pb::EnrollTotpRequest {
    pb::EnrollTotpRequest {
        subject_id: subject.into(),
        label: "Phone".into(),
        account_name: format!("{subject}@example.com"),
        ..Default::default()
    }
}

fn code_of(e: ClientError) -> (Code, String) {
    match e {
        ClientError::Status(s) => (s.code(), s.message().to_owned()),
        other => panic!("not a status: {other}"),
    }
}

/// A plain HTTP/1.1 GET.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, out)
}

async fn full_flow(srv: &InProcess) {
    let c = srv.client(TOKEN).await;
    let e = c.enroll_totp(enroll("alice")).await.unwrap();
    assert!(e.otpauth_uri.starts_with("otpauth://totp/Tessera:alice%40example.com?secret="));
    assert!(e.qr_png.starts_with(b"\x89PNG") && e.qr_svg.contains("<svg"));
    // omit_qr: the same enrolment without the images (the URI carries everything)
    let bare = c.enroll_totp(pb::EnrollTotpRequest { omit_qr: true, ..enroll("alice") }).await.unwrap();
    assert!(bare.otpauth_uri.contains(&bare.secret_base32) && bare.qr_png.is_empty() && bare.qr_svg.is_empty());
    c.remove_factor("alice", &bare.factor_id).await.unwrap();

    // a wrong confirmation code is PERMISSION_DENIED and counts as an attempt
    let good = srv.code(&e.secret_base32, 0);
    let wrong = if good == "000000" { "111111" } else { "000000" };
    let (code, msg) = code_of(c.confirm_totp("alice", &e.factor_id, wrong).await.unwrap_err());
    assert_eq!(code, Code::PermissionDenied);
    assert!(msg.contains("4 attempts"), "{msg}");
    let conf = c.confirm_totp("alice", &e.factor_id, &good).await.unwrap();
    assert_eq!(conf.factor.as_ref().unwrap().status, pb::FactorStatus::Active as i32);
    assert_eq!(conf.recovery_codes.len(), 10);
    // confirming again: FAILED_PRECONDITION
    assert_eq!(code_of(c.confirm_totp("alice", &e.factor_id, &good).await.unwrap_err()).0, Code::FailedPrecondition);

    // verify: the confirmation code is used up; the next step's code works once
    assert!(matches!(c.verify_totp("alice", &good, None).await.unwrap(), Verification::Rejected { .. }));
    let next = srv.code(&e.secret_base32, 1);
    assert_eq!(
        c.verify_totp("alice", &next, Some(("198.51.100.4", "browser/1"))).await.unwrap(),
        Verification::Accepted { factor_id: e.factor_id.clone() }
    );
    assert!(matches!(c.verify_totp("alice", &next, None).await.unwrap(), Verification::Rejected { .. }), "replay");

    // lockout: wrong codes until LOCKED; a valid code while locked is LOCKED
    srv.clock.advance(time::Duration::seconds(60));
    let mut last = None;
    for _ in 0..5 {
        last = Some(c.verify_totp("alice", wrong, None).await.unwrap());
    }
    let Some(Verification::Locked { until }) = last else { panic!("not locked: {last:?}") };
    let want = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs((srv.clock.now().unix_timestamp() + 60) as u64);
    assert_eq!(until, want);
    let fresh = srv.code(&e.secret_base32, 0);
    assert!(matches!(c.verify_totp("alice", &fresh, None).await.unwrap(), Verification::Locked { .. }));

    // after the lock: a recovery code works once
    srv.clock.advance(time::Duration::seconds(61));
    let (v, left) = c.redeem_recovery_code("alice", &conf.recovery_codes[0], None).await.unwrap();
    assert!(v.is_accepted());
    assert_eq!(left, 9);
    assert!(!c.redeem_recovery_code("alice", &conf.recovery_codes[0], None).await.unwrap().0.is_accepted());
    let regenerated = c.regenerate_recovery_codes("alice").await.unwrap();
    assert_eq!(regenerated.len(), 10);

    // list, audit, remove
    let factors = c.list_factors("alice").await.unwrap();
    assert_eq!(factors.len(), 1);
    assert!(factors[0].last_used_at.is_some());
    let page = c.list_audit_events("alice", 5, "").await.unwrap();
    assert_eq!(page.events.len(), 5);
    assert!(!page.next_page_token.is_empty());
    let all = c.list_audit_events("alice", 100, "").await.unwrap();
    assert!(
        all.events.iter().any(|e| e.kind == "totp_verified" && e.ip == "198.51.100.4" && e.user_agent == "browser/1")
    );
    assert!(all.events.iter().any(|e| e.kind == "locked"));
    c.remove_factor("alice", &e.factor_id).await.unwrap();
    assert!(c.list_factors("alice").await.unwrap().is_empty());
    assert_eq!(code_of(c.remove_factor("alice", &e.factor_id).await.unwrap_err()).0, Code::NotFound);

    // HTTP endpoints: health on both listeners, metrics only on the admin one
    for addr in [srv.http, srv.admin] {
        assert_eq!(http_get(addr, "/healthz").0, 200);
        assert_eq!(http_get(addr, "/readyz").0, 200);
    }
    let (st, public) = http_get(srv.http, "/metrics");
    assert_eq!(st, 404, "metrics on the public listener: {public}");
    assert!(!public.contains("# TYPE"), "{public}");
    let (st, metrics) = http_get(srv.admin, "/metrics");
    assert_eq!(st, 200);
    assert!(metrics.contains("tessera_verifications_total"), "{metrics}");
    assert!(metrics.contains("tessera_grpc_request_seconds_bucket"));
    assert!(metrics.contains("tessera_db_pool_connections"));
    assert!(metrics.contains("tessera_lockouts_total"), "{metrics}");
    assert!(metrics.contains("tessera_enrolments_total{stage=\"confirmed\"}"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_flow_sqlite() {
    let srv = InProcess::start(None).await;
    full_flow(&srv).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_flow_postgres() {
    let Some(db) = PgDatabase::create("gRPC end-to-end on PostgreSQL").await else { return };
    let srv = InProcess::start(Some(db.url.clone())).await;
    full_flow(&srv).await;
    srv.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes() {
    let srv = InProcess::start(None).await;
    let c = srv.client(TOKEN).await;
    let check = |r: Result<Verification, ClientError>, want: Code, field: &str| {
        let (code, msg) = code_of(r.unwrap_err());
        assert_eq!(code, want, "{msg}");
        assert!(msg.contains(field), "message {msg:?} should name {field}");
    };
    check(c.verify_totp("bob", "12345", None).await, Code::InvalidArgument, "code");
    check(c.verify_totp("bob", "12a456", None).await, Code::InvalidArgument, "code");
    check(c.verify_totp("", "123456", None).await, Code::InvalidArgument, "subject_id");
    check(c.verify_totp(&"x".repeat(200), "123456", None).await, Code::InvalidArgument, "subject_id");
    let (code, msg) =
        code_of(c.enroll_totp(pb::EnrollTotpRequest { label: "l".repeat(65), ..enroll("bob") }).await.unwrap_err());
    assert_eq!((code, msg.contains("label")), (Code::InvalidArgument, true), "{msg}");
    let (code, msg) =
        code_of(c.enroll_totp(pb::EnrollTotpRequest { digits: Some(7), ..enroll("bob") }).await.unwrap_err());
    assert_eq!((code, msg.contains("digits")), (Code::InvalidArgument, true), "{msg}");
    let (code, msg) =
        code_of(c.enroll_totp(pb::EnrollTotpRequest { algorithm: 9, ..enroll("bob") }).await.unwrap_err());
    assert_eq!((code, msg.contains("algorithm")), (Code::InvalidArgument, true), "{msg}");
    let (code, msg) = code_of(c.confirm_totp("bob", "not-a-uuid", "123456").await.unwrap_err());
    assert_eq!((code, msg.contains("factor_id")), (Code::InvalidArgument, true), "{msg}");
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(code_of(c.confirm_totp("bob", &unknown, "123456").await.unwrap_err()).0, Code::NotFound);
    let (code, msg) = code_of(c.redeem_recovery_code("bob", "nope", None).await.unwrap_err());
    assert_eq!((code, msg.contains("recovery_code")), (Code::InvalidArgument, true), "{msg}");
    let (code, _) = code_of(c.list_audit_events("bob", 1000, "").await.unwrap_err());
    assert_eq!(code, Code::InvalidArgument);
    // a wrong code is an outcome, never RESOURCE_EXHAUSTED
    for _ in 0..7 {
        let v = c.verify_totp("bob", "123456", None).await.unwrap();
        assert!(matches!(v, Verification::Rejected { .. } | Verification::Locked { .. }));
    }

    // unauthenticated: no token, wrong token
    let wrong = srv.client("not-the-token-at-all").await;
    assert_eq!(code_of(wrong.verify_totp("bob", "123456", None).await.unwrap_err()).0, Code::Unauthenticated);
    assert_eq!(code_of(wrong.list_factors("bob").await.unwrap_err()).0, Code::Unauthenticated);
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", srv.grpc)).unwrap().connect().await.unwrap();
    let mut bare = pb::factor_service_client::FactorServiceClient::new(channel.clone());
    let s = bare.list_factors(pb::ListFactorsRequest { subject_id: "bob".into() }).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);

    // health and reflection need no token
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let r = health
        .check(tonic_health::pb::HealthCheckRequest { service: "tessera.v1.FactorService".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut refl = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else { panic!("{resp:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"tessera.v1.FactorService".to_owned()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_owned()), "{names:?}");
    srv.stop().await;
}

/// The gRPC edge (tower-http's request id and trace layers, the call metrics): a well-formed
/// `x-request-id` is echoed, on errors too; a malformed one is replaced by a UUID; the metrics
/// name our RPCs and count everything else as `other`, so a caller cannot mint label values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_and_calls_counted() {
    let srv = InProcess::start(None).await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", srv.grpc)).unwrap().connect().await.unwrap();
    let mut raw = pb::factor_service_client::FactorServiceClient::new(channel.clone());
    let req = |subject: &str, id: Option<&str>| {
        let mut r = tonic::Request::new(pb::ListFactorsRequest { subject_id: subject.into() });
        r.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        if let Some(id) = id {
            r.metadata_mut().insert("x-request-id", id.parse().unwrap());
        }
        r
    };
    let id_of = |m: &tonic::metadata::MetadataMap| m.get("x-request-id").unwrap().to_str().unwrap().to_owned();
    let ok = raw.list_factors(req("ids", Some("trace-abc-123"))).await.unwrap();
    assert_eq!(id_of(ok.metadata()), "trace-abc-123");
    let err = raw.list_factors(req("", Some("trace-err-1"))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(id_of(err.metadata()), "trace-err-1", "an error carries the id too");
    let long = "a".repeat(65);
    for bad in ["has space", "semi;colon", long.as_str()] {
        let r = raw.list_factors(req("ids", Some(bad))).await.unwrap();
        let id = id_of(r.metadata());
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{bad:?} replaced by a UUID, not {id:?}");
    }
    let r = raw.list_factors(req("ids", None)).await.unwrap();
    assert!(uuid::Uuid::parse_str(&id_of(r.metadata())).is_ok());
    let mut bare = tonic::Request::new(pb::ListFactorsRequest { subject_id: "ids".into() });
    bare.metadata_mut().insert("x-request-id", "unauth-1".parse().unwrap());
    let err = raw.list_factors(bare).await.unwrap_err();
    assert_eq!((err.code(), id_of(err.metadata())), (Code::Unauthenticated, "unauth-1".to_owned()));

    // A made-up method of a real service: refused (by the interceptor, without a token; as
    // UNIMPLEMENTED with one), and counted as `other` either way.
    let mut grpc = tonic::client::Grpc::new(channel);
    for (token, want) in [(None, Code::Unauthenticated), (Some(TOKEN), Code::Unimplemented)] {
        grpc.ready().await.unwrap();
        let mut r = tonic::Request::new(pb::ListFactorsRequest::default());
        if let Some(t) = token {
            r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        let path = http::uri::PathAndQuery::from_static("/tessera.v1.FactorService/MintALabel");
        let err =
            grpc.unary::<_, pb::ListFactorsResponse, _>(r, path, tonic_prost::ProstCodec::default()).await.unwrap_err();
        assert_eq!(err.code(), want);
    }

    let (_, metrics) = http_get(srv.admin, "/metrics");
    let line = |method: &str, code: &str| {
        metrics.lines().any(|l| {
            l.starts_with("tessera_grpc_requests_total{")
                && l.contains(&format!("method=\"{method}\""))
                && l.contains(&format!("code=\"{code}\""))
        })
    };
    assert!(line("ListFactors", "Ok"), "{metrics}");
    assert!(line("ListFactors", "InvalidArgument"), "{metrics}");
    assert!(line("ListFactors", "Unauthenticated"), "{metrics}");
    assert!(line("other", "Unimplemented"), "{metrics}");
    assert!(line("other", "Unauthenticated"), "{metrics}");
    assert!(!metrics.contains("MintALabel"), "a caller's path never becomes a label: {metrics}");
    assert!(metrics.contains("tessera_grpc_request_seconds_bucket{method=\"ListFactors\""), "{metrics}");
    srv.stop().await;
}

/// RequestPasswordReset and CompletePasswordReset answer as the pages do: one empty answer
/// for every address, the link's rules, the password's rules, nobody signed in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_reset_over_grpc() {
    use tessera_client::pb::LoginStatus;
    let srv = InProcess::start(None).await;
    let c = srv.client(TOKEN).await;
    let mut id = c.identity();
    let (email, pw) = ("rita@example.com", "correct horse battery staple");
    id.create_user(pb::CreateUserRequest {
        email: email.into(),
        password: pw.into(),
        context: None,
        email_verified: true,
    })
    .await
    .unwrap();
    let ctx =
        || Some(pb::ClientContext { ip: "192.0.2.9".into(), user_agent: "grpc-test".into(), ..Default::default() });
    for e in [email, "nobody@example.com"] {
        let r = id.request_password_reset(pb::RequestPasswordResetRequest { email: e.into(), context: ctx() }).await;
        assert_eq!(r.unwrap().into_inner(), pb::RequestPasswordResetResponse {});
    }
    let bad = id
        .request_password_reset(pb::RequestPasswordResetRequest { email: "not an email".into(), context: ctx() })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let mail = tessera_testkit::wait_for_mail(&srv.dir.path().join("mail"), email, "Reset your password").await;
    assert!(mail.text.contains("192.0.2.9 (grpc-test)"), "{}", mail.text);
    let link = mail.link("http://localhost:8080/password/reset?token=").expect("a link");
    let token = link.rsplit_once("token=").unwrap().1.to_owned();
    let complete = |token: &str, new_password: &str| pb::CompletePasswordResetRequest {
        token: token.into(),
        new_password: new_password.into(),
        context: ctx(),
    };
    let mut id2 = id.clone();
    let mut call = async |r: pb::CompletePasswordResetRequest| id2.complete_password_reset(r).await;
    assert_eq!(call(complete("", "whatever passphrase")).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(call(complete(&token[..30], "whatever passphrase")).await.unwrap_err().code(), Code::FailedPrecondition);
    let weak = call(complete(&token, "short")).await.unwrap_err();
    assert_eq!(weak.code(), Code::InvalidArgument);
    assert!(weak.message().contains("password"), "{}", weak.message());
    let new_pw = "a new passphrase over grpc";
    call(complete(&token, new_pw)).await.unwrap();
    let again = call(complete(&token, "and yet another one")).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert!(again.message().contains("expired or was already used"), "{}", again.message());
    let login =
        |password: &str| pb::BeginLoginRequest { email: email.into(), password: password.into(), context: ctx() };
    let r = id.begin_login(login(new_pw)).await.unwrap().into_inner();
    assert_eq!(r.status, LoginStatus::Authenticated as i32);
    let r = id.begin_login(login(pw)).await.unwrap().into_inner();
    assert_eq!(r.status, LoginStatus::Failed as i32);
    srv.stop().await;
}

/// The account's lifecycle over gRPC, the same use cases as the pages: SignUp answers every
/// address alike; an unverified user is told so after the right password; VerifyEmail with the
/// mailed token; ChangePassword; RequestEmailChange and ConfirmEmailChange; CreateUser without
/// `email_verified` mails a link too.
#[tokio::test]
async fn account_lifecycle_over_grpc() {
    use tessera_client::pb::{ChangePasswordStatus, LoginStatus};
    let srv = InProcess::start(None).await;
    let c = srv.client(TOKEN).await;
    let mut id = c.identity();
    let mail_dir = srv.dir.path().join("mail");
    let ctx =
        || Some(pb::ClientContext { ip: "192.0.2.9".into(), user_agent: "grpc-test".into(), ..Default::default() });
    let pw = "correct horse battery staple";
    let token_of = |m: &tessera_testkit::Mail, path: &str| {
        let link = m.link(&format!("http://localhost:8080{path}?token=")).expect("a link");
        link.rsplit_once("token=").unwrap().1.to_owned()
    };
    let sign_up = |email: &str, password: &str| pb::SignUpRequest {
        email: email.into(),
        password: password.into(),
        context: ctx(),
    };
    let login = |email: &str, password: &str| pb::BeginLoginRequest {
        email: email.into(),
        password: password.into(),
        context: ctx(),
    };
    id.create_user(pb::CreateUserRequest {
        email: "old@example.com".into(),
        password: pw.into(),
        context: None,
        email_verified: true,
    })
    .await
    .unwrap();
    for e in ["sue@example.com", "old@example.com"] {
        assert_eq!(id.sign_up(sign_up(e, pw)).await.unwrap().into_inner(), pb::SignUpResponse {});
    }
    let weak = id.sign_up(sign_up("x@example.com", "short")).await.unwrap_err();
    assert_eq!(weak.code(), Code::InvalidArgument);
    tessera_testkit::wait_for_mail(&mail_dir, "old@example.com", "Someone tried to create an account").await;
    // Until the address is confirmed, the right password is answered as a wrong one.
    let r = id.begin_login(login("sue@example.com", pw)).await.unwrap().into_inner();
    assert_eq!(r.status, LoginStatus::Failed as i32);
    assert!(r.session_token.is_empty());
    let m = tessera_testkit::wait_for_mail(&mail_dir, "sue@example.com", "Confirm your email address").await;
    let token = token_of(&m, "/verify-email");
    let verify = |t: &str, p: &str| pb::VerifyEmailRequest { token: t.into(), context: ctx(), password: p.into() };
    assert_eq!(id.verify_email(verify(&token[..20], pw)).await.unwrap_err().code(), Code::InvalidArgument);
    let r = id.verify_email(verify(&token, "not the password")).await.unwrap().into_inner();
    assert_eq!(r.status, pb::VerifyEmailStatus::WrongPassword as i32, "the one who signed up confirms");
    let r = id.verify_email(verify(&token, pw)).await.unwrap().into_inner();
    assert_eq!(r.status, pb::VerifyEmailStatus::Verified as i32);
    assert_eq!(id.verify_email(verify(&token, pw)).await.unwrap_err().code(), Code::FailedPrecondition);
    let r = id.begin_login(login("sue@example.com", pw)).await.unwrap().into_inner();
    assert_eq!(r.status, LoginStatus::Authenticated as i32);
    let session = r.session_token;

    // Change the password: the current one, then the new one works and the old does not.
    let change = |current: &str, new: &str| pb::ChangePasswordRequest {
        session_token: session.clone(),
        current_password: current.into(),
        new_password: new.into(),
        context: ctx(),
    };
    let new_pw = "a new passphrase over grpc";
    let r = id.change_password(change("wrong password here", new_pw)).await.unwrap().into_inner();
    assert_eq!(r.status, ChangePasswordStatus::WrongPassword as i32);
    assert_eq!(id.change_password(change(pw, "short")).await.unwrap_err().code(), Code::InvalidArgument);
    let r = id.change_password(change(pw, new_pw)).await.unwrap().into_inner();
    assert_eq!(r.status, ChangePasswordStatus::Changed as i32);
    let stale = pb::ChangePasswordRequest { session_token: "A".repeat(43), ..change(new_pw, pw) };
    assert_eq!(id.change_password(stale).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(
        id.begin_login(login("sue@example.com", pw)).await.unwrap().into_inner().status,
        LoginStatus::Failed as i32
    );

    // Change the address: the link goes to the new one.
    id.request_email_change(pb::RequestEmailChangeRequest {
        session_token: session.clone(),
        new_email: "sue.new@example.com".into(),
        context: ctx(),
    })
    .await
    .unwrap();
    let m = tessera_testkit::wait_for_mail(&mail_dir, "sue.new@example.com", "Confirm your new email address").await;
    let token = token_of(&m, "/settings/email/confirm");
    let confirm =
        |t: &str, s: &str| pb::ConfirmEmailChangeRequest { token: t.into(), context: ctx(), session_token: s.into() };
    // Only in a session of the user who asked.
    let other = id.confirm_email_change(confirm(&token, &"A".repeat(43))).await.unwrap_err();
    assert_eq!(other.code(), Code::Unauthenticated);
    id.confirm_email_change(confirm(&token, &session)).await.unwrap();
    let again = id.confirm_email_change(confirm(&token, &session)).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    tessera_testkit::wait_for_mail(&mail_dir, "sue@example.com", "Your account's email address was changed").await;
    let r = id.begin_login(login("sue.new@example.com", new_pw)).await.unwrap().into_inner();
    assert_eq!(r.status, LoginStatus::Authenticated as i32);

    // A service's user without `email_verified` waits for the link too; a new one can be asked for.
    id.create_user(pb::CreateUserRequest {
        email: "tom@example.com".into(),
        password: pw.into(),
        context: ctx(),
        email_verified: false,
    })
    .await
    .unwrap();
    let r = id.begin_login(login("tom@example.com", pw)).await.unwrap().into_inner();
    assert_eq!(r.status, LoginStatus::Failed as i32);
    for e in ["tom@example.com", "nobody@example.com"] {
        let r = id.send_email_verification(pb::SendEmailVerificationRequest { email: e.into(), context: ctx() });
        assert_eq!(r.await.unwrap().into_inner(), pb::SendEmailVerificationResponse {});
    }
    srv.stop().await;
}

fn spawn_serve(data: &std::path::Path, extra: &[&str]) -> Serve {
    Serve::spawn(env!("CARGO_BIN_EXE_tessera"), data, extra, &[("TESSERA_SERVICE_TOKEN", TOKEN)])
}

fn sigterm(p: &mut Serve) -> std::process::ExitStatus {
    let st = Command::new("kill").args(["-TERM", &p.child.id().to_string()]).status().unwrap();
    assert!(st.success());
    for _ in 0..100 {
        if let Some(s) = p.child.try_wait().unwrap() {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    p.child.kill().unwrap();
    panic!("tessera serve did not stop within 5 s of SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn_serve(dir.path(), &[]);
    let c = Client::connect(&format!("http://{}", p.grpc), TOKEN, Default::default()).await.unwrap();
    let e = c.enroll_totp(enroll("carol")).await.unwrap();
    assert_eq!(c.list_factors("carol").await.unwrap()[0].id, e.factor_id);
    // the printed admin address serves the metrics; the public one does not
    let addr = |url: &str| url.trim_start_matches("http://").parse::<SocketAddr>().unwrap();
    let (st, metrics) = http_get(addr(&p.admin), "/metrics");
    assert_eq!(st, 200);
    assert!(metrics.contains("tessera_enrolments_total"), "{metrics}");
    assert_eq!(http_get(addr(&p.http), "/metrics").0, 404);
    let status = sigterm(&mut p);
    assert!(status.success(), "exit status {status:?}");
    // the keyring was created 0600 on first start, the service token came from the environment
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(dir.path().join("keyring")).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!dir.path().join("service-token").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_accept_a_code_once() {
    let Some(db) = PgDatabase::create("two-replica test").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring");
    let args = ["--database-url", db.url.as_str(), "--keyring", keyring.to_str().unwrap()];
    let mut a = spawn_serve(&dir.path().join("a"), &args);
    let mut b = spawn_serve(&dir.path().join("b"), &args);
    let ca = Client::connect(&format!("http://{}", a.grpc), TOKEN, Default::default()).await.unwrap();
    let cb = Client::connect(&format!("http://{}", b.grpc), TOKEN, Default::default()).await.unwrap();

    let e = ca.enroll_totp(enroll("dave")).await.unwrap();
    let now = SystemClock.now().unix_timestamp();
    ca.confirm_totp("dave", &e.factor_id, &code_at(&e.secret_base32, now)).await.unwrap();
    // the next step's code, sent 64 times at once, half to each replica
    let code = code_at(&e.secret_base32, now + 30);
    let mut tasks = Vec::new();
    for i in 0..64 {
        let c = if i % 2 == 0 { ca.clone() } else { cb.clone() };
        let code = code.clone();
        tasks.push(tokio::spawn(async move { c.verify_totp("dave", &code, None).await.unwrap() }));
    }
    let mut accepted = 0;
    for t in tasks {
        if t.await.unwrap().is_accepted() {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 1, "exactly one of 64 concurrent verifications across two replicas is accepted");
    // both replicas see the same state
    assert_eq!(cb.list_factors("dave").await.unwrap().len(), 1);
    assert!(sigterm(&mut a).success());
    assert!(sigterm(&mut b).success());
    db.cleanup().await;
}

/// The protected service's own first factor, as `RequireTotpLayer` expects it: a tiny password
/// layer that puts `AuthenticatedSubject` in the request's extensions when `x-demo-user` is a
/// known user and `x-demo-password` is their password. Nothing else sets the extension.
fn demo_password_layer(mut req: http::Request<()>) -> http::Request<()> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let signed_in = match (header("x-demo-user"), header("x-demo-password")) {
        (Some(user), Some(password))
            if ["erin", "finn"].contains(&user.as_str()) && password == format!("{user}'s password") =>
        {
            Some(user)
        }
        _ => None,
    };
    if let Some(user) = signed_in {
        req.extensions_mut().insert(tessera_client::AuthenticatedSubject(user));
    }
    req
}

/// A handler behind the demo password layer and `RequireTotpLayer`; it greets the verified subject.
fn guarded_service(
    c: &Client,
) -> impl tower::Service<http::Request<()>, Response = http::Response<String>, Error = std::convert::Infallible> {
    use tessera_client::{RequireTotpLayer, VerifiedSubject};
    let handler = tower::service_fn(|req: http::Request<()>| async move {
        let who = req.extensions().get::<VerifiedSubject>().map(|s| s.0.clone()).unwrap_or_default();
        Ok::<_, std::convert::Infallible>(http::Response::new(format!("hello {who}")))
    });
    tower::ServiceBuilder::new()
        .map_request(demo_password_layer)
        .layer(RequireTotpLayer::new(c.clone()))
        .service(handler)
}

/// One request to `guarded_service`: signed in as `user` (with their password) or not, with any
/// extra headers; returns the status, `x-tessera-reason` and the body.
async fn send<S>(svc: &mut S, user: Option<&str>, headers: &[(&str, &str)]) -> (u16, String, String)
where
    S: tower::Service<http::Request<()>, Response = http::Response<String>, Error = std::convert::Infallible>,
{
    use tower::ServiceExt;
    let mut b = http::Request::builder();
    if let Some(u) = user {
        b = b.header("x-demo-user", u).header("x-demo-password", format!("{u}'s password"));
    }
    for (name, value) in headers {
        b = b.header(*name, *value);
    }
    let resp = svc.ready().await.unwrap().call(b.body(()).unwrap()).await.unwrap();
    let reason = resp.headers().get("x-tessera-reason").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (resp.status().as_u16(), reason, resp.into_body())
}

/// A code that the device of `secret` does not show anywhere in the verification window.
fn wrong_code(srv: &InProcess, secret: &str) -> String {
    let window = [-1, 0, 1].map(|s| srv.code(secret, s));
    ["000000", "111111", "222222", "333333"].into_iter().find(|c| !window.iter().any(|w| w == c)).unwrap().to_owned()
}

/// The middleware use: a handler behind `RequireTotpLayer` runs only for a signed-in subject
/// (`AuthenticatedSubject`, set by the service's own password layer) and an accepted code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_totp_layer_guards_a_handler() {
    use tessera_client::CODE_HEADER;
    let srv = InProcess::start(None).await;
    let c = srv.client(TOKEN).await;
    let e = c.enroll_totp(enroll("erin")).await.unwrap();
    c.confirm_totp("erin", &e.factor_id, &srv.code(&e.secret_base32, 0)).await.unwrap();
    let mut svc = guarded_service(&c);
    let good = srv.code(&e.secret_base32, 1);
    let wrong = wrong_code(&srv, &e.secret_base32);

    let (status, reason, _) = send(&mut svc, None, &[(CODE_HEADER, &good)]).await;
    assert_eq!((status, reason.as_str()), (401, "not signed in"));
    let (status, reason, _) = send(&mut svc, Some("erin"), &[]).await;
    assert_eq!((status, reason.as_str()), (401, "second factor required"));
    let (status, reason, _) = send(&mut svc, Some("erin"), &[(CODE_HEADER, &wrong)]).await;
    assert_eq!((status, reason.as_str()), (401, "code rejected"));
    assert_eq!(send(&mut svc, Some("erin"), &[(CODE_HEADER, "12")]).await.0, 400);
    let (status, _, body) = send(&mut svc, Some("erin"), &[(CODE_HEADER, &good)]).await;
    assert_eq!((status, body.as_str()), (200, "hello erin"));
    assert_eq!(
        send(&mut svc, Some("erin"), &[(CODE_HEADER, &good)]).await.0,
        401,
        "a replayed code does not get through"
    );
    srv.stop().await;
}

/// The subject comes from the service's own sign-in, never from the client: a forged
/// `x-tessera-subject` naming another user neither gets in nor spends that user's attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_totp_layer_ignores_a_forged_subject_header() {
    use tessera_client::CODE_HEADER;
    let srv = InProcess::start(None).await;
    let c = srv.client(TOKEN).await;
    let mut secrets = Vec::new();
    for who in ["erin", "finn"] {
        let e = c.enroll_totp(enroll(who)).await.unwrap();
        c.confirm_totp(who, &e.factor_id, &srv.code(&e.secret_base32, 0)).await.unwrap();
        secrets.push(e.secret_base32);
    }
    let (erin, finn) = (&secrets[0], &secrets[1]);
    let mut svc = guarded_service(&c);
    let finn_wrong = wrong_code(&srv, finn);

    // Not signed in, naming finn: refused before Tessera is asked, however often (more than the
    // 5 attempts that would lock finn out), and even with a good code of finn's (the
    // confirmation used the current step's; this is the next step's).
    for _ in 0..8 {
        let (status, reason, _) =
            send(&mut svc, None, &[("x-tessera-subject", "finn"), (CODE_HEADER, &finn_wrong)]).await;
        assert_eq!((status, reason.as_str()), (401, "not signed in"));
    }
    let finn_next = srv.code(finn, 1);
    let (status, reason, _) = send(&mut svc, None, &[("x-tessera-subject", "finn"), (CODE_HEADER, &finn_next)]).await;
    assert_eq!((status, reason.as_str()), (401, "not signed in"));
    // Signed in as erin, naming finn: the code is checked for erin (a wrong one costs erin,
    // and erin's good one lets erin in, as erin).
    let erin_wrong = wrong_code(&srv, erin);
    let (status, reason, _) =
        send(&mut svc, Some("erin"), &[("x-tessera-subject", "finn"), (CODE_HEADER, &erin_wrong)]).await;
    assert_eq!((status, reason.as_str()), (401, "code rejected"));
    let erin_next = srv.code(erin, 1);
    let (status, _, body) =
        send(&mut svc, Some("erin"), &[("x-tessera-subject", "finn"), (CODE_HEADER, &erin_next)]).await;
    assert_eq!((status, body.as_str()), (200, "hello erin"));

    // finn lost nothing: a wrong code now is finn's first failure, and the good code is unused.
    assert_eq!(
        c.verify_totp("finn", &finn_wrong, None).await.unwrap(),
        Verification::Rejected { attempts_remaining: 4 }
    );
    assert!(c.verify_totp("finn", &finn_next, None).await.unwrap().is_accepted());
    srv.stop().await;
}

async fn identity_scenario(srv: &InProcess) {
    use prost::Message;
    use tessera_client::pb::LoginStatus;
    let c = srv.client(TOKEN).await;
    let mut id = c.identity();
    let pw = "correct horse battery staple";
    let login = |email: &str, password: &str| pb::BeginLoginRequest {
        email: email.into(),
        password: password.into(),
        context: Some(pb::ClientContext { ip: "192.0.2.1".into(), user_agent: "e2e".into(), ..Default::default() }),
    };
    let complete = |challenge: &str, code: &str| pb::CompleteLoginRequest {
        challenge: challenge.into(),
        code: code.into(),
        context: None,
    };

    // sign up; a short password is INVALID_ARGUMENT naming the field
    let s = id
        .create_user(pb::CreateUserRequest {
            email: "x@example.com".into(),
            password: "short".into(),
            context: None,
            email_verified: true,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("password"), "{}", s.message());
    let uid = id
        .create_user(pb::CreateUserRequest {
            email: "Grace@Example.com".into(),
            password: pw.into(),
            context: None,
            email_verified: true,
        })
        .await
        .unwrap()
        .into_inner()
        .user_id;

    // login without MFA
    let r = id.begin_login(login("grace@example.com", pw)).await.unwrap().into_inner();
    assert_eq!(r.status, LoginStatus::Authenticated as i32);
    assert_eq!(r.assurance, pb::Assurance::Password as i32);
    // an unknown email and a wrong password get byte-identical answers
    let wrong = id.begin_login(login("grace@example.com", "not the password")).await.unwrap().into_inner();
    let unknown = id.begin_login(login("nobody@example.com", "not the password")).await.unwrap().into_inner();
    assert_eq!(wrong.status, LoginStatus::Failed as i32);
    assert_eq!(wrong.encode_to_vec(), unknown.encode_to_vec());

    // enrol: the login now needs a code
    let e = c
        .enroll_totp(pb::EnrollTotpRequest {
            subject_id: uid.clone(),
            label: "Phone".into(),
            account_name: "grace".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let conf = c.confirm_totp(&uid, &e.factor_id, &srv.code(&e.secret_base32, 0)).await.unwrap();
    let r = id.begin_login(login("grace@example.com", pw)).await.unwrap().into_inner();
    assert_eq!(r.status, LoginStatus::SecondFactorRequired as i32);
    let ch = r.challenge;
    // five wrong codes lock and void the challenge
    let good = srv.code(&e.secret_base32, 1);
    let bad = if good == "000000" { "111111" } else { "000000" };
    for _ in 0..4 {
        let r = id.complete_login_totp(complete(&ch, bad)).await.unwrap().into_inner();
        assert_eq!(r.status, LoginStatus::Rejected as i32);
    }
    let r = id.complete_login_totp(complete(&ch, bad)).await.unwrap().into_inner();
    assert_eq!(r.status, LoginStatus::Locked as i32);
    assert!(r.locked_until.is_some());
    srv.clock.advance(time::Duration::seconds(61));
    let r = id.complete_login_totp(complete(&ch, &srv.code(&e.secret_base32, 0))).await.unwrap().into_inner();
    assert_eq!(r.status, LoginStatus::ChallengeInvalid as i32);

    // a recovery code login works once
    let ch = id.begin_login(login("grace@example.com", pw)).await.unwrap().into_inner().challenge;
    let r = id.complete_login_recovery(complete(&ch, &conf.recovery_codes[0])).await.unwrap().into_inner();
    assert_eq!(
        (r.status, r.assurance),
        (LoginStatus::Authenticated as i32, pb::Assurance::PasswordAndSecondFactor as i32)
    );
    let session = r.session_token;
    let ch = id.begin_login(login("grace@example.com", pw)).await.unwrap().into_inner().challenge;
    let r = id.complete_login_recovery(complete(&ch, &conf.recovery_codes[0])).await.unwrap().into_inner();
    assert_eq!(r.status, LoginStatus::Rejected as i32);
    let who = id
        .get_session(pb::GetSessionRequest { session_token: session.clone(), account_id: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(who.user_id, uid);
    assert_eq!(who.assurance, pb::Assurance::PasswordAndSecondFactor as i32);
    let now = srv.clock.now().unix_timestamp();
    assert_eq!(who.second_factor_verified_at.as_ref().map(|t| t.seconds), Some(now), "when each factor was proven");
    assert_eq!(who.password_verified_at.as_ref().map(|t| t.seconds), Some(now));
    assert_eq!(who.expires_at.as_ref().map(|t| t.seconds), Some(now + 12 * 3600));
    assert_eq!(who.idle_expires_at.as_ref().map(|t| t.seconds), Some(now + 30 * 60));
    assert!(who.recently_authenticated && !who.session_id.is_empty());

    // accounts: policy and access, as the session's user (never a user id the caller picks)
    let acct = id
        .create_account(pb::CreateAccountRequest { name: "Acme".into(), session_token: session.clone(), context: None })
        .await
        .unwrap()
        .into_inner()
        .account_id;
    id.set_account_policy(pb::SetAccountPolicyRequest {
        account_id: acct.clone(),
        require_mfa: true,
        session_token: session.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let acc = id
        .get_session(pb::GetSessionRequest { session_token: session.clone(), account_id: acct.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acc.account_access, pb::AccountAccess::Open as i32);

    // support reset: a service token may not; a support token may
    let req = || pb::SupportResetMfaRequest {
        email: "grace@example.com".into(),
        reason: "lost phone and codes; identity checked by video call".into(),
        ticket: "SUP-77".into(),
        actor: "agent-ann".into(),
        context: None,
    };
    assert_eq!(id.support_reset_mfa(req()).await.unwrap_err().code(), Code::PermissionDenied);
    let mut support = srv.client(SUPPORT).await.identity();
    let rep = support.support_reset_mfa(req()).await.unwrap().into_inner();
    assert_eq!((rep.factors_removed, rep.recovery_codes_removed), (1, 10));
    assert_eq!(
        id.get_session(pb::GetSessionRequest { session_token: session.clone(), account_id: String::new() })
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated,
        "the reset revoked the session"
    );
    // login without MFA again; the account now asks for enrolment
    let r = id.begin_login(login("grace@example.com", pw)).await.unwrap().into_inner();
    assert_eq!(r.status, LoginStatus::Authenticated as i32);
    assert_eq!(r.enrolment_required_account_ids, vec![acct.clone()]);
    let acc = id
        .get_session(pb::GetSessionRequest { session_token: r.session_token, account_id: acct })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acc.account_access, pb::AccountAccess::EnrolmentRequired as i32);

    // the audit trail has each step
    let events = c.list_audit_events(&uid, 100, "").await.unwrap().events;
    for kind in [
        "user_created",
        "login_succeeded",
        "totp_confirmed",
        "second_factor_challenged",
        "locked",
        "challenges_voided",
        "recovery_code_redeemed",
        "account_policy_changed",
        "support_mfa_reset",
    ] {
        assert!(events.iter().any(|e| e.kind == kind), "no {kind} in the trail");
    }
    let reset = events.iter().find(|e| e.kind == "support_mfa_reset").unwrap();
    assert_eq!(reset.actor, "agent-ann");
    assert!(reset.detail_json.contains("SUP-77"));
}

/// Sessions and accounts over gRPC: re-authentication and its window, token rotation, and the
/// member calls, each refusal with its status code.
async fn accounts_over_grpc(srv: &InProcess) {
    use tessera_client::pb::LoginStatus;
    let c = srv.client(TOKEN).await;
    let mut id = c.identity();
    let pw = "correct horse battery staple";
    let ctx = || Some(pb::ClientContext { ip: "192.0.2.1".into(), user_agent: "e2e".into(), ..Default::default() });
    // AddMember stays in the contract, removed: it added anyone by id without their consent.
    #[allow(deprecated)]
    let e = id.add_member(pb::AddMemberRequest { account_id: "a".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert!(e.message().contains("InviteMember"), "{}", e.message());
    // Two users with authenticators, enrolled by the service; each signs in with a code.
    let mut users = Vec::new();
    for email in ["owner@example.com", "member@example.com"] {
        let uid = id
            .create_user(pb::CreateUserRequest {
                email: email.into(),
                password: pw.into(),
                context: None,
                email_verified: true,
            })
            .await
            .unwrap()
            .into_inner()
            .user_id;
        let e = c.enroll_totp(enroll(&uid)).await.unwrap();
        c.confirm_totp(&uid, &e.factor_id, &srv.code(&e.secret_base32, 0)).await.unwrap();
        users.push((uid, e.secret_base32.clone()));
    }
    srv.clock.advance(time::Duration::seconds(30));
    let mut sessions = Vec::new();
    for (email, (_, secret)) in ["owner@example.com", "member@example.com"].iter().zip(&users) {
        let ch = id
            .begin_login(pb::BeginLoginRequest { email: (*email).into(), password: pw.into(), context: ctx() })
            .await
            .unwrap()
            .into_inner()
            .challenge;
        let r = id
            .complete_login_totp(pb::CompleteLoginRequest { challenge: ch, code: srv.code(secret, 0), context: ctx() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, LoginStatus::Authenticated as i32);
        assert!(!r.browser_token.is_empty(), "a known-browser token for the front end to keep");
        sessions.push(r.session_token);
    }
    let (owner, member) = (sessions[0].clone(), sessions[1].clone());
    let (member_id, _) = users[1].clone();
    let acct = id
        .create_account(pb::CreateAccountRequest { name: "Acme".into(), session_token: owner.clone(), context: None })
        .await
        .unwrap()
        .into_inner()
        .account_id;
    let invite = |token: &str, email: &str, role: &str| pb::InviteMemberRequest {
        session_token: token.into(),
        account_id: acct.clone(),
        email: email.into(),
        role: role.into(),
        context: None,
    };
    // Bad input, no session, wrong session: each its code.
    let code = |r: Result<tonic::Response<pb::InviteMemberResponse>, tonic::Status>| r.unwrap_err().code();
    assert_eq!(code(id.invite_member(invite(&owner, "member@example.com", "god")).await), Code::InvalidArgument);
    assert_eq!(code(id.invite_member(invite("", "member@example.com", "member")).await), Code::InvalidArgument);
    assert_eq!(code(id.invite_member(invite("forged", "member@example.com", "member")).await), Code::Unauthenticated);
    assert_eq!(
        code(id.invite_member(invite(&member, "x@example.com", "member")).await),
        Code::NotFound,
        "not a member"
    );
    // Invite, list, accept.
    let inv =
        id.invite_member(invite(&owner, "Member@Example.com", "member")).await.unwrap().into_inner().invitation_id;
    let unknown = id.invite_member(invite(&owner, "nobody@example.com", "member")).await.unwrap().into_inner();
    assert!(!unknown.invitation_id.is_empty(), "the same answer for an unknown email");
    let mine = id
        .list_invitations(pb::ListInvitationsRequest { session_token: member.clone() })
        .await
        .unwrap()
        .into_inner()
        .invitations;
    assert_eq!((mine.len(), mine[0].account_name.as_str(), mine[0].role.as_str()), (1, "Acme", "member"));
    let wrong_code = id
        .accept_invitation(pb::AcceptInvitationRequest {
            session_token: member.clone(),
            invitation_id: inv.clone(),
            context: None,
            code: "AAAA-AAAA-AAAA-AAAA".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong_code.code(), Code::NotFound, "the mailed code proves the mailbox");
    let code = srv.mailed_code("Member@Example.com").await;
    let joined = id
        .accept_invitation(pb::AcceptInvitationRequest {
            session_token: member.clone(),
            invitation_id: inv.clone(),
            context: None,
            code: code.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(joined.account_id, acct);
    let again = id
        .accept_invitation(pb::AcceptInvitationRequest {
            session_token: member.clone(),
            invitation_id: inv,
            context: None,
            code,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    let list = id
        .list_members(pb::ListMembersRequest { session_token: owner.clone(), account_id: acct.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.members.len(), 2);
    assert!(list.members.iter().any(|m| m.user_id == member_id && m.role == "member" && m.has_mfa));
    assert_eq!(list.invitations.len(), 1, "the unknown address, shown as invited");
    let denied = id
        .list_members(pb::ListMembersRequest { session_token: member.clone(), account_id: acct.clone() })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    // Roles, and the last owner.
    let role = |token: &str, user: &str, role: &str| pb::ChangeMemberRoleRequest {
        session_token: token.into(),
        account_id: acct.clone(),
        user_id: user.into(),
        role: role.into(),
        context: None,
    };
    id.change_member_role(role(&owner, &member_id, "admin")).await.unwrap();
    let owner_id = users[0].0.clone();
    let last = id.change_member_role(role(&owner, &owner_id, "member")).await.unwrap_err();
    assert_eq!(last.code(), Code::PermissionDenied);
    assert!(last.message().contains("owner"), "{}", last.message());
    let remove = |token: &str, user: &str| pb::RemoveMemberRequest {
        session_token: token.into(),
        account_id: acct.clone(),
        user_id: user.into(),
        context: None,
    };
    assert_eq!(id.remove_member(remove(&member, &owner_id)).await.unwrap_err().code(), Code::PermissionDenied);

    // The re-authentication window: 15 minutes on, account changes need a fresh factor.
    srv.clock.advance(time::Duration::minutes(15));
    let stale = id
        .set_account_policy(pb::SetAccountPolicyRequest {
            account_id: acct.clone(),
            require_mfa: true,
            session_token: owner.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::PermissionDenied);
    assert!(stale.message().contains("recent authentication") && stale.message().contains("Reauthenticate"));
    assert_eq!(id.remove_member(remove(&owner, &member_id)).await.unwrap_err().code(), Code::PermissionDenied);
    let who = id
        .get_session(pb::GetSessionRequest { session_token: owner.clone(), account_id: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert!(!who.recently_authenticated);
    let reauth = |proof| pb::ReauthenticateRequest { session_token: owner.clone(), proof: Some(proof), context: ctx() };
    use tessera_client::pb::reauthenticate_request::Proof;
    let r = id.reauthenticate(reauth(Proof::Password(pw.into()))).await.unwrap_err();
    assert_eq!(r.code(), Code::InvalidArgument, "a password is not a second factor");
    let r = id.reauthenticate(reauth(Proof::TotpCode(srv.code(&users[0].1, 0)))).await.unwrap().into_inner();
    assert_eq!(r.status, LoginStatus::Authenticated as i32);
    let fresh = r.session_token;
    assert_ne!(fresh, owner);
    assert_eq!(
        id.get_session(pb::GetSessionRequest { session_token: owner.clone(), account_id: String::new() })
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated,
        "the old token stopped working"
    );
    let grace = |days: i64| {
        Some(prost_types::Timestamp { seconds: srv.clock.now().unix_timestamp() + days * 86_400, nanos: 0 })
    };
    let policy = |grace_until| pb::SetAccountPolicyRequest {
        account_id: acct.clone(),
        require_mfa: true,
        grace_until,
        session_token: fresh.clone(),
        context: None,
        max_trust_days: Some(7),
    };
    assert_eq!(id.set_account_policy(policy(grace(91))).await.unwrap_err().code(), Code::InvalidArgument);
    id.set_account_policy(policy(grace(90))).await.unwrap();
    let too_long = pb::SetAccountPolicyRequest { max_trust_days: Some(31), ..policy(grace(90)) };
    let e = id.set_account_policy(too_long).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("max_trust_days"), "{}", e.message());
    id.remove_member(remove(&fresh, &member_id)).await.unwrap();
    assert_eq!(id.remove_member(remove(&fresh, &member_id)).await.unwrap_err().code(), Code::NotFound);
    // A password check needs the end user's address (failures lock per email and address).
    let no_ip = id
        .begin_login(pb::BeginLoginRequest { email: "owner@example.com".into(), password: pw.into(), context: None })
        .await
        .unwrap_err();
    assert_eq!(no_ip.code(), Code::InvalidArgument);
    assert!(no_ip.message().contains("context.ip"), "{}", no_ip.message());
    // A service's sign-out of everyone: an unknown user is NOT_FOUND.
    let nf = id
        .logout_everywhere(pb::LogoutEverywhereRequest { user_id: "no-such-user".into(), context: None })
        .await
        .unwrap_err();
    assert_eq!(nf.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_over_grpc_sqlite() {
    let srv = InProcess::start(None).await;
    accounts_over_grpc(&srv).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_over_grpc_postgres() {
    let Some(db) = PgDatabase::create("accounts over gRPC on PostgreSQL").await else { return };
    let srv = InProcess::start(Some(db.url.clone())).await;
    accounts_over_grpc(&srv).await;
    srv.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_scenario_sqlite() {
    let srv = InProcess::start(None).await;
    identity_scenario(&srv).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_scenario_postgres() {
    let Some(db) = PgDatabase::create("identity end-to-end on PostgreSQL").await else { return };
    let srv = InProcess::start(Some(db.url.clone())).await;
    identity_scenario(&srv).await;
    srv.stop().await;
    db.cleanup().await;
}

/// Make a CA, a server certificate for 127.0.0.1/localhost and a client certificate with the
/// real `openssl` tool; and a second CA whose client certificate the server must refuse.
fn make_pki(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    std::fs::write(dir.join("server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    for ca in ["ca", "other-ca"] {
        let (key, pem, subj) = (format!("{ca}.key"), format!("{ca}.pem"), format!("/CN=Tessera test {ca}"));
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj]);
        run(&a);
    }
    for (name, ca, ext) in
        [("server", "ca", "server.ext"), ("client", "ca", "client.ext"), ("rogue", "other-ca", "client.ext")]
    {
        let (key, csr, pem, subj) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("/CN={name}"));
        let mut a = vec!["req"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        run(&a);
        let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            ext,
        ]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_mtls_needs_a_client_certificate_from_the_configured_ca() {
    if !Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success()) {
        assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "the mTLS test needs openssl in CI");
        loud("SKIPPED (mTLS): install openssl to make the test certificates");
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let p = |f: &str| pki.path().join(f);
    let srv = InProcess::start_with(ConfigFile {
        grpc_tls_cert: Some(p("server.pem")),
        grpc_tls_key: Some(p("server.key")),
        grpc_client_ca: Some(p("ca.pem")),
        ..Default::default()
    })
    .await;
    let read = |f: &str| std::fs::read(p(f)).unwrap();
    let tls = |identity: Option<(&str, &str)>| tessera_client::ClientOptions {
        tls: Some(tessera_client::ClientTls {
            ca_pem: read("ca.pem"),
            identity: identity.map(|(c, k)| (read(c), read(k))),
            domain: Some("localhost".into()),
        }),
        connect_timeout: Duration::from_secs(3),
        timeout: Duration::from_secs(3),
        retries: 0,
    };
    let url = format!("https://{}", srv.grpc);

    // With a certificate from the CA (and the token): served.
    let c = Client::connect(&url, TOKEN, tls(Some(("client.pem", "client.key")))).await.unwrap();
    let e = c.enroll_totp(enroll("mtls")).await.unwrap();
    assert_eq!(c.list_factors("mtls").await.unwrap()[0].id, e.factor_id);
    // The certificate does not replace the token.
    let c = Client::connect(&url, "wrong-token-0123456789", tls(Some(("client.pem", "client.key")))).await.unwrap();
    assert!(matches!(c.list_factors("mtls").await, Err(ClientError::Status(s)) if s.code() == Code::Unauthenticated));

    // Without a certificate, with one from another CA, or in plain text: no call gets through.
    for opts in [tls(None), tls(Some(("rogue.pem", "rogue.key")))] {
        let refused = match Client::connect(&url, TOKEN, opts).await {
            Err(_) => true,
            Ok(c) => c.list_factors("mtls").await.is_err(),
        };
        assert!(refused, "a client without a valid certificate was served");
    }
    let plain = format!("http://{}", srv.grpc);
    let opts = tessera_client::ClientOptions { retries: 0, ..Default::default() };
    let refused = match Client::connect(&plain, TOKEN, opts).await {
        Err(_) => true,
        Ok(c) => c.list_factors("mtls").await.is_err(),
    };
    assert!(refused, "a plain-text client was served");
    srv.stop().await;
}

/// Read one response to `GET /healthz` (its body is "ok\n") from a kept-alive connection.
async fn read_health(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !out.ends_with(b"ok\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the response was complete: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(out).unwrap()
}

const GET_HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// A client that starts a request and never finishes its headers has its connection closed
/// after the header-read timeout (shortened here; the default is 10 s, longer than the wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_closes_a_connection_that_never_finishes_its_headers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = InProcess::start_cfg(ConfigFile::default(), |c| {
        c.http.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(srv.http).await.unwrap();
    s.write_all(b"GET /healthz HT").await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(closed.is_ok(), "the server kept a connection open whose headers never finished");
    assert!(!String::from_utf8_lossy(&out).contains(" 200 "), "{}", String::from_utf8_lossy(&out));
    // An idle kept-alive connection is closed the same way.
    let mut k = tokio::net::TcpStream::connect(srv.http).await.unwrap();
    k.write_all(GET_HEALTH).await.unwrap();
    assert!(read_health(&mut k).await.starts_with("HTTP/1.1 200"));
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), k.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "an idle kept-alive connection stayed open");
    assert_eq!(http_get(srv.http, "/healthz").0, 200, "a client that finishes its request is served");
    srv.stop().await;
}

/// With a cap of 2, a third connection waits (unserved) while two are open, and is served as
/// soon as one of them closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_caps_open_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let given = ConfigFile { http_max_connections: Some(2), ..Default::default() };
    // A long header timeout, so the two held connections are not closed as idle meanwhile.
    let srv = InProcess::start_cfg(given, |c| c.http.header_read_timeout = Duration::from_secs(600)).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(srv.http).await.unwrap();
        s.write_all(GET_HEALTH).await.unwrap();
        assert!(read_health(&mut s).await.starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let mut third = tokio::net::TcpStream::connect(srv.http).await.unwrap();
    third.write_all(GET_HEALTH).await.unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "a third connection was served while two were open: {early:?}");
    drop(held.pop());
    let out = tokio::time::timeout(Duration::from_secs(10), read_health(&mut third)).await;
    assert!(out.expect("not served after a connection closed").starts_with("HTTP/1.1 200"));
    srv.stop().await;
}

/// Run `tessera keys …` on the data directory a server uses.
fn keys_cli(data: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .env_remove("TESSERA_DATABASE_URL")
        .env_remove("TESSERA_KEYRING_FILE")
        .env("TESSERA_DATA_DIR", data)
        .env("TESSERA_LOG", "warn")
        .arg("keys")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "keys {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `(totp_secrets, recovery_codes)` under `key` in `tessera keys status`.
fn key_rows(status: &str, key: &str) -> (u64, u64) {
    let line = status.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("{key} in {status}"));
    let n: Vec<u64> = line.split_whitespace().skip(1).filter_map(|w| w.parse().ok()).collect();
    (n[0], n[1])
}

fn current_key_of(status: &str) -> String {
    status.lines().find(|l| l.contains(" yes ")).unwrap().split_whitespace().next().unwrap().to_owned()
}

/// Wait until the server's metrics say `key` seals new secrets (the swap happened).
async fn wait_for_current_key(p: &Serve, key: &str) {
    let admin = p.admin.trim_start_matches("http://").parse::<SocketAddr>().unwrap();
    let want = format!("tessera_keyring_current{{key_id=\"{key}\"}} 1");
    for _ in 0..100 {
        if http_get(admin, "/metrics").1.lines().any(|l| l == want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the running server did not swap in key {key} within 10 s");
}

/// Enrol and confirm `subject` over gRPC; returns its secret.
async fn enrol_confirmed(c: &Client, subject: &str) -> String {
    let e = c.enroll_totp(enroll(subject)).await.unwrap();
    let r = c.confirm_totp(subject, &e.factor_id, &code_at(&e.secret_base32, SystemClock.now().unix_timestamp())).await;
    assert_eq!(r.unwrap().recovery_codes.len(), 10);
    e.secret_base32
}

/// A rotation reaches a running server without a restart (it checks the keyring file every
/// `--keyring-check-interval`): the next enrolment is sealed, and its recovery codes MACed,
/// under the new key; after `keys reencrypt` no TOTP secret uses the old key, and every device
/// still verifies against the same running process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_while_serving_seals_under_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let mut p = spawn_serve(data, &["--keyring-check-interval", "1s"]);
    let c = Client::connect(&format!("http://{}", p.grpc), TOKEN, Default::default()).await.unwrap();
    let alice = enrol_confirmed(&c, "alice").await;
    let old = current_key_of(&keys_cli(data, &["status"]));
    wait_for_current_key(&p, &old).await;

    assert!(keys_cli(data, &["rotate"]).contains(&format!("was {old}")));
    let new = current_key_of(&keys_cli(data, &["status"]));
    assert_ne!(new, old);
    wait_for_current_key(&p, &new).await;

    let bob = enrol_confirmed(&c, "bob").await;
    let status = keys_cli(data, &["status"]);
    assert_eq!(key_rows(&status, &new), (1, 10), "bob's secret and codes under the new key: {status}");
    assert_eq!(key_rows(&status, &old), (1, 10), "alice's, made before the rotation, keep theirs: {status}");

    assert!(keys_cli(data, &["reencrypt"]).contains("re-encrypted 1 TOTP secrets"));
    let status = keys_cli(data, &["status"]);
    assert_eq!(key_rows(&status, &old), (0, 10), "no TOTP secret under the old key: {status}");
    assert_eq!(key_rows(&status, &new), (2, 10), "{status}");
    let next = SystemClock.now().unix_timestamp() + 30;
    assert!(c.verify_totp("bob", &code_at(&bob, next), None).await.unwrap().is_accepted());
    // Once alice's codes are regenerated nothing uses the old key: it retires, the running
    // server swaps the retired keyring in, and alice's re-encrypted device still verifies.
    assert_eq!(c.regenerate_recovery_codes("alice").await.unwrap().len(), 10);
    // The metrics showed this server's swap; with no other replica, no grace is needed.
    assert!(keys_cli(data, &["retire", &old, "--grace", "0s"]).contains("retired"));
    let admin = p.admin.trim_start_matches("http://").parse::<SocketAddr>().unwrap();
    for _ in 0..100 {
        if http_get(admin, "/metrics").1.contains("tessera_keyring_keys 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(http_get(admin, "/metrics").1.contains("tessera_keyring_keys 1"), "the retired keyring is swapped in");
    assert!(c.verify_totp("alice", &code_at(&alice, next), None).await.unwrap().is_accepted());
    assert!(sigterm(&mut p).success());
}

/// SIGHUP swaps the keyring in at once, however long the check interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_keyring() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let mut p = spawn_serve(data, &["--keyring-check-interval", "1h"]);
    let c = Client::connect(&format!("http://{}", p.grpc), TOKEN, Default::default()).await.unwrap();
    let old = current_key_of(&keys_cli(data, &["status"]));
    wait_for_current_key(&p, &old).await;
    keys_cli(data, &["rotate"]);
    let new = current_key_of(&keys_cli(data, &["status"]));
    let st = Command::new("kill").args(["-HUP", &p.child.id().to_string()]).status().unwrap();
    assert!(st.success());
    wait_for_current_key(&p, &new).await;
    enrol_confirmed(&c, "carol").await;
    assert_eq!(key_rows(&keys_cli(data, &["status"]), &new), (1, 10));
    assert!(sigterm(&mut p).success(), "SIGHUP does not stop the server");
}

/// Security keys over gRPC, as a middleware would offer them: the four WebAuthn RPCs carry the
/// spec's JSON both ways (answered here by a software authenticator at the public URL's
/// origin), ListFactors shows the new kind, and refusals are outcomes or named errors.
#[tokio::test]
async fn security_keys_over_grpc() {
    let srv = InProcess::start(None).await;
    let c = srv.client(TOKEN).await;
    let mut raw = c.raw();
    let subject = uuid::Uuid::new_v4().to_string();
    let mut key = tessera_testkit::SoftKey::new("http://localhost:8080");
    let begin = raw
        .begin_webauthn_registration(pb::BeginWebauthnRegistrationRequest {
            subject_id: subject.clone(),
            label: "Blue key".into(),
            kind: pb::WebauthnKind::SecurityKey as i32,
            user_name: "sam@example.com".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let options: serde_json::Value = serde_json::from_str(&begin.options_json).unwrap();
    assert_eq!(options["publicKey"]["rp"]["id"], "localhost", "{options}");
    let answer = key.register(&begin.options_json);
    let done = raw
        .finish_webauthn_registration(pb::FinishWebauthnRegistrationRequest {
            subject_id: subject.clone(),
            ceremony_id: begin.ceremony_id.clone(),
            response_json: answer.clone(),
            context: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.recovery_codes.len(), 10, "a first factor brings recovery codes");
    assert_eq!(done.factor.as_ref().unwrap().kind, "security_key");
    let factors = c.list_factors(&subject).await.unwrap();
    assert_eq!(factors.iter().map(|f| f.kind.as_str()).collect::<Vec<_>>(), ["security_key"]);
    // Used once.
    let again = raw
        .finish_webauthn_registration(pb::FinishWebauthnRegistrationRequest {
            subject_id: subject.clone(),
            ceremony_id: begin.ceremony_id,
            response_json: answer,
            context: None,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");

    let begin_assertion = || pb::BeginWebauthnAssertionRequest { subject_id: subject.clone() };
    let b = raw.begin_webauthn_assertion(begin_assertion()).await.unwrap().into_inner();
    let finish = |ceremony: &str, response: &str| pb::FinishWebauthnAssertionRequest {
        subject_id: subject.clone(),
        ceremony_id: ceremony.into(),
        response_json: response.into(),
        context: None,
    };
    let a = key.assert(&b.options_json);
    let ok = raw.finish_webauthn_assertion(finish(&b.ceremony_id, &a)).await.unwrap().into_inner();
    assert_eq!((ok.outcome, ok.factor_id.as_str()), (pb::Outcome::Accepted as i32, done.factor.unwrap().id.as_str()));
    let replay = raw.finish_webauthn_assertion(finish(&b.ceremony_id, &a)).await.unwrap().into_inner();
    assert_eq!(
        (replay.outcome, replay.refusal),
        (pb::Outcome::Rejected as i32, pb::WebauthnRefusal::CeremonyInvalid as i32)
    );
    // Malformed input names its field.
    let b = raw.begin_webauthn_assertion(begin_assertion()).await.unwrap().into_inner();
    let bad = raw.finish_webauthn_assertion(finish(&b.ceremony_id, "not json")).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("response"), "{}", bad.message());
    let bad = raw
        .begin_webauthn_registration(pb::BeginWebauthnRegistrationRequest {
            subject_id: subject.clone(),
            label: "k".into(),
            kind: pb::WebauthnKind::Unspecified as i32,
            user_name: "sam".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    srv.stop().await;
}

/// `Authorize` over a real socket, and the `tower` layer that uses it: a handler behind
/// `RequireSessionLayer` runs only for a session Tessera allows now, and sees who it is.
async fn authorize_scenario(srv: &InProcess) {
    use tessera_client::{AuthorizedUser, RequireSessionLayer, SESSION_HEADER};
    use tower::ServiceExt;
    let c = srv.client(TOKEN).await;
    let mut id = c.identity();
    let pw = "correct horse battery staple";
    let ctx = || Some(pb::ClientContext { ip: "192.0.2.1".into(), user_agent: "e2e".into(), ..Default::default() });
    let uid = id
        .create_user(pb::CreateUserRequest {
            email: "ivy@example.com".into(),
            password: pw.into(),
            context: None,
            email_verified: true,
        })
        .await
        .unwrap()
        .into_inner()
        .user_id;
    let login = id
        .begin_login(pb::BeginLoginRequest { email: "ivy@example.com".into(), password: pw.into(), context: ctx() })
        .await
        .unwrap()
        .into_inner();
    let token = login.session_token;
    let st = |r: &pb::AuthorizeResponse| pb::AuthorizeStatus::try_from(r.status).unwrap();

    // No requirement: INVALID_ARGUMENT, naming the field.
    let e = c.authorize(&token, None, pb::Requirement::Unspecified).await.unwrap_err();
    assert!(
        matches!(&e, ClientError::Status(s) if s.code() == Code::InvalidArgument && s.message().contains("require")),
        "{e}"
    );
    // Password level: ALLOW, with who it is.
    let r = c.authorize(&token, None, pb::Requirement::Password).await.unwrap();
    assert_eq!(st(&r), pb::AuthorizeStatus::Allow);
    assert_eq!((r.user_id.as_str(), r.email.as_str()), (uid.as_str(), "ivy@example.com"));
    assert_eq!(r.level, pb::Assurance::Password as i32);
    assert!(r.session_created_at.is_some() && r.second_factor_verified_at.is_none());
    // Second factor level without a factor: ENROLMENT_REQUIRED; an unknown token: LOGIN_REQUIRED.
    let r = c.authorize(&token, None, pb::Requirement::SecondFactor).await.unwrap();
    assert_eq!((st(&r), r.user_id.as_str()), (pb::AuthorizeStatus::EnrolmentRequired, uid.as_str()));
    let r = c.authorize(&"A".repeat(43), None, pb::Requirement::Password).await.unwrap();
    assert_eq!((st(&r), r.user_id.as_str()), (pb::AuthorizeStatus::LoginRequired, ""));
    // An account the user is not in: NOT_A_MEMBER; a malformed id: INVALID_ARGUMENT.
    let acct = id
        .create_account(pb::CreateAccountRequest { session_token: token.clone(), name: "Ivy's".into(), context: None })
        .await
        .unwrap()
        .into_inner()
        .account_id;
    let r = c.authorize(&token, Some(&acct), pb::Requirement::Password).await.unwrap();
    assert_eq!(st(&r), pb::AuthorizeStatus::Allow);
    let r = c.authorize(&token, Some("00000000-0000-4000-8000-000000000000"), pb::Requirement::Password).await.unwrap();
    assert_eq!(st(&r), pb::AuthorizeStatus::NotAMember);
    assert!(c.authorize(&token, Some("not an id"), pb::Requirement::Password).await.is_err());

    // The layer: the session from the cookie (or the header); the user in the extensions.
    let handler = tower::service_fn(|req: http::Request<()>| async move {
        let who = req.extensions().get::<AuthorizedUser>().map(|u| u.email.clone()).unwrap_or_default();
        Ok::<_, std::convert::Infallible>(http::Response::new(format!("hello {who}")))
    });
    let svc = tower::ServiceBuilder::new()
        .layer(RequireSessionLayer::new(c.clone(), pb::Requirement::Password).account(acct.clone()))
        .service(handler);
    let call = |headers: Vec<(&'static str, String)>| {
        let svc = svc.clone();
        async move {
            let mut b = http::Request::builder();
            for (k, v) in headers {
                b = b.header(k, v);
            }
            let r = svc.oneshot(b.body(()).unwrap()).await.unwrap();
            let why = r.headers().get("x-tessera-reason").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
            (r.status().as_u16(), why, r.into_body())
        }
    };
    assert_eq!(call(vec![]).await, (401, "login_required".into(), String::new()));
    let cookie = format!("a=1; __Host-tessera_session={token}");
    assert_eq!(call(vec![("cookie", cookie.clone())]).await, (200, String::new(), "hello ivy@example.com".into()));
    assert_eq!(call(vec![(SESSION_HEADER, token.clone())]).await.0, 200);
    // A forged user header names no one: only the session counts.
    assert_eq!(call(vec![("x-tessera-user", uid.clone())]).await.0, 401);
    // Signed out: the very next request is refused.
    id.logout(pb::LogoutRequest { session_token: token.clone(), context: None }).await.unwrap();
    assert_eq!(call(vec![("cookie", cookie)]).await, (401, "session_revoked".into(), String::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_over_grpc_sqlite() {
    let srv = InProcess::start(None).await;
    authorize_scenario(&srv).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_over_grpc_postgres() {
    let Some(db) = PgDatabase::create("authorize over grpc").await else { return };
    let srv = InProcess::start(Some(db.url.clone())).await;
    authorize_scenario(&srv).await;
    srv.stop().await;
    db.cleanup().await;
}
