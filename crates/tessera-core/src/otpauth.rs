//! `otpauth://totp/…` URIs (the Key Uri Format authenticator apps scan from a QR code):
//! building them with correct percent-encoding, and parsing them with clear errors.

use crate::CoreError;
use crate::otp::{Algorithm, Secret, TotpParams};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Everything but RFC 3986 unreserved characters is encoded (so `:`, `@`, spaces, `&`, `=`
/// and non-ASCII are all percent-encoded, spaces as `%20`, never `+`).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Longest URI the parser reads.
pub const MAX_URI_LEN: usize = 2048;

/// What an otpauth URI describes.
#[derive(Debug, Clone)]
pub struct OtpauthKey {
    /// The service the code is for (shown above the code in the app).
    pub issuer: String,
    /// The user's account name at that service.
    pub account: String,
    /// The shared secret.
    pub secret: Secret,
    /// Algorithm, digits, period.
    pub params: TotpParams,
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// Build `otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=…&algorithm=…&digits=…&period=…`.
///
/// The result holds the secret: treat it as one (never log it).
pub fn build_uri(issuer: &str, account: &str, secret: &Secret, params: &TotpParams) -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm={}&digits={}&period={}",
        enc(issuer),
        enc(account),
        secret.to_base32().as_str(),
        enc(issuer),
        params.algorithm().as_str(),
        params.digits(),
        params.period()
    ))
}

fn bad(msg: impl Into<String>) -> CoreError {
    CoreError::OtpauthUri(msg.into())
}

fn dec(s: &str, what: &str) -> Result<String, CoreError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| bad(format!("{what} is not valid UTF-8 after percent-decoding")))
}

/// Parse an otpauth URI. Only `totp` is accepted; defaults are SHA1, 6 digits, 30 s.
pub fn parse_uri(uri: &str) -> Result<OtpauthKey, CoreError> {
    if uri.len() > MAX_URI_LEN {
        return Err(bad(format!("longer than {MAX_URI_LEN} bytes")));
    }
    let rest = uri
        .get(..10)
        .filter(|p| p.eq_ignore_ascii_case("otpauth://"))
        .and_then(|_| uri.get(10..))
        .ok_or_else(|| bad("must start with otpauth://"))?;
    let (kind, rest) = rest.split_once('/').ok_or_else(|| bad("missing the /LABEL after the type"))?;
    if kind.eq_ignore_ascii_case("hotp") {
        return Err(bad("HOTP (counter-based) keys are not supported; use TOTP"));
    }
    if !kind.eq_ignore_ascii_case("totp") {
        return Err(bad(format!("unknown type {:?}; expected totp", kind.chars().take(16).collect::<String>())));
    }
    let (label, query) = rest.split_once('?').ok_or_else(|| bad("missing the ?secret=… query"))?;
    // The issuer/account separator is a literal ':' (an encoded %3A belongs to a name).
    let (label_issuer, account) = match label.split_once(':') {
        Some((i, a)) => (Some(dec(i, "issuer")?), dec(a, "account name")?),
        None => (None, dec(label, "account name")?),
    };
    let account = account.trim().to_owned();
    if account.is_empty() {
        return Err(bad("the account name is empty"));
    }

    let (mut secret, mut issuer, mut alg, mut digits, mut period) = (None, None, None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match k.to_ascii_lowercase().as_str() {
            "secret" => &mut secret,
            "issuer" => &mut issuer,
            "algorithm" => &mut alg,
            "digits" => &mut digits,
            "period" => &mut period,
            _ => continue, // e.g. image=…: ignored, as apps do
        };
        if slot.is_some() {
            return Err(bad(format!("parameter {k} appears twice")));
        }
        *slot = Some(dec(v, k)?);
    }
    let secret = secret.ok_or_else(|| bad("missing the secret parameter"))?;
    let secret = Secret::from_base32(&secret).map_err(|e| bad(e.to_string()))?;
    let issuer = match (label_issuer, issuer) {
        (Some(l), Some(q)) if l != q => {
            return Err(bad("the issuer in the label and the issuer parameter differ"));
        }
        (Some(l), _) => l,
        (None, Some(q)) => q,
        (None, None) => String::new(),
    };
    let alg = alg.as_deref().map_or(Ok(Algorithm::Sha1), Algorithm::parse).map_err(|e| bad(e.to_string()))?;
    let num = |v: Option<String>, name: &str, default: u32| -> Result<u32, CoreError> {
        v.map_or(Ok(default), |s| s.parse::<u32>().map_err(|_| bad(format!("{name} is not a number"))))
    };
    let params =
        TotpParams::new(alg, num(digits, "digits", 6)?, num(period, "period", 30)?).map_err(|e| bad(e.to_string()))?;
    Ok(OtpauthKey { issuer, account, secret, params })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Secret {
        Secret::from_base32("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP").unwrap()
    }

    #[test]
    fn builds_encoded_uri() {
        let p = TotpParams::new(Algorithm::Sha256, 8, 60).unwrap();
        let uri = build_uri("ACME Co: Prod", "jöe@example.com", &key(), &p);
        assert_eq!(
            uri.as_str(),
            "otpauth://totp/ACME%20Co%3A%20Prod:j%C3%B6e%40example.com?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\
             &issuer=ACME%20Co%3A%20Prod&algorithm=SHA256&digits=8&period=60"
        );
    }

    #[test]
    fn round_trips() {
        for (issuer, account) in [("Tessera", "a@b.c"), ("A & B = C?", "x:y z"), ("東京", "ユーザー"), ("100%", "#1/2")]
        {
            let p = TotpParams::new(Algorithm::Sha512, 6, 30).unwrap();
            let k = parse_uri(&build_uri(issuer, account, &key(), &p)).unwrap();
            assert_eq!((k.issuer.as_str(), k.account.as_str()), (issuer, account));
            assert_eq!(k.params, p);
            assert_eq!(k.secret.expose(), key().expose());
        }
    }

    #[test]
    fn defaults_and_errors() {
        let k = parse_uri("otpauth://totp/alice?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP").unwrap();
        assert_eq!((k.issuer.as_str(), k.account.as_str()), ("", "alice"));
        assert_eq!(k.params, TotpParams::default());
        let cases = [
            ("https://totp/a?secret=JBSWY3DPEHPK3PXP", "otpauth://"),
            ("otpauth://hotp/a?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&counter=1", "HOTP"),
            ("otpauth://totp/a", "query"),
            ("otpauth://totp/a?issuer=x", "missing the secret"),
            ("otpauth://totp/a?secret=AAAA", "bits"),
            ("otpauth://totp/a?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&digits=7", "digits"),
            ("otpauth://totp/a?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&period=x", "period"),
            ("otpauth://totp/a?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&algorithm=MD5", "algorithm"),
            ("otpauth://totp/X:a?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=Y", "differ"),
            (
                "otpauth://totp/a?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
                "twice",
            ),
            ("otpauth://totp/%FF?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "UTF-8"),
            ("otpauth://totp/I:?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "empty"),
        ];
        for (uri, want) in cases {
            let e = parse_uri(uri).unwrap_err().to_string();
            assert!(e.contains(want), "{uri}: {e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in ".{0,300}") {
            let _ = parse_uri(&s);
            let _ = parse_uri(&format!("otpauth://totp/{s}"));
        }
        #[test]
        fn parser_never_panics_on_bytes(b in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let s = String::from_utf8_lossy(&b);
            let _ = parse_uri(&s);
            let _ = crate::otp::Code::parse(&s);
            let _ = crate::recovery::RecoveryCode::parse(&s);
        }
        #[test]
        fn names_round_trip(issuer in "[^:\\x00-\\x1f]{1,40}", account in "\\PC{1,40}") {
            let account = account.trim().to_owned();
            proptest::prop_assume!(!account.is_empty());
            let k = parse_uri(&build_uri(&issuer, &account, &key(), &TotpParams::default())).unwrap();
            proptest::prop_assert_eq!(k.issuer, issuer);
            proptest::prop_assert_eq!(k.account, account);
        }
    }
}
