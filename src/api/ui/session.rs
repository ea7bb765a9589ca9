//! The pages' session cookie and CSRF tokens. Pure: bytes in, bytes out.
//!
//! A session is `name|role|expiry|nonce|binding`, base64url, then `.` and its HMAC-SHA256 under
//! a key derived from the installation key (every replica reads the same one from the store, so
//! a session signed by one is good on all). It never holds the token: `binding` is an HMAC of
//! the credential's token hash, so a session ends when its credential is rotated or revoked.
//! The CSRF token of a form is an HMAC of the session's nonce (or of the proxy user's name).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::Role;

/// How long a session lasts: 12 h.
pub const LIFETIME_SECONDS: i64 = 12 * 3600;

/// The cookie's name; with `Secure`, the `__Host-` prefix also pins it to this host and `/`.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-br_session"
    } else {
        "br_session"
    }
}

/// The key that signs sessions and CSRF tokens, derived from the installation key (never the
/// installation key itself: the probes' fingerprints use that one).
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// The pages' key of the installation whose key is `installation_key`.
    pub fn derive(installation_key: &str) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(installation_key.as_bytes())
            .expect("HMAC takes any key");
        mac.update(b"backup-remediator pages session v1");
        Self(mac.finalize().into_bytes().into())
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key");
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// What binds a session to the credential whose token hash is `token_sha256`.
    pub fn binding(&self, token_sha256: &[u8; 32]) -> String {
        hex::encode(&self.mac(&[b"credential", token_sha256])[..8])
    }

    /// The CSRF token of forms served to `subject` (see [`Session::csrf_subject`]).
    pub fn csrf(&self, subject: &str) -> String {
        hex::encode(&self.mac(&[b"csrf", subject.as_bytes()])[..16])
    }

    /// Whether `given` is `subject`'s CSRF token (compared in constant time).
    pub fn csrf_ok(&self, subject: &str, given: &str) -> bool {
        let want = self.csrf(subject);
        want.len() == given.len() && bool::from(want.as_bytes().ct_eq(given.as_bytes()))
    }

    /// The cookie value of `session`.
    pub fn seal(&self, s: &Session) -> String {
        let payload = format!(
            "{}|{}|{}|{}|{}",
            s.name,
            s.role.as_str(),
            s.expires,
            s.nonce,
            s.binding
        );
        let sig = self.mac(&[b"session", payload.as_bytes()]);
        format!("{}.{}", B64.encode(payload), B64.encode(sig))
    }

    /// The session in cookie value `value`, if its signature holds and it has not expired at
    /// `now` (Unix seconds). A tampered, malformed or stale cookie is none.
    pub fn open(&self, value: &str, now: i64) -> Option<Session> {
        let (payload, sig) = value.split_once('.')?;
        let payload = B64.decode(payload).ok()?;
        let sig = B64.decode(sig).ok()?;
        let want = self.mac(&[b"session", &payload]);
        if sig.len() != want.len() || !bool::from(want[..].ct_eq(&sig[..])) {
            return None;
        }
        let text = String::from_utf8(payload).ok()?;
        let mut parts = text.split('|');
        let (name, role, expires, nonce, binding) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if parts.next().is_some() {
            return None;
        }
        let expires: i64 = expires.parse().ok()?;
        if expires <= now || expires > now + LIFETIME_SECONDS + 60 {
            return None;
        }
        Some(Session {
            name: name.to_owned(),
            role: role.parse().ok()?,
            expires,
            nonce: nonce.to_owned(),
            binding: binding.to_owned(),
        })
    }
}

/// A signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The credential's configured name.
    pub name: String,
    pub role: Role,
    /// Unix seconds.
    pub expires: i64,
    /// Random, per sign-in: what the session's CSRF token is made from.
    pub nonce: String,
    /// [`SessionKey::binding`] of the credential signed in with.
    pub binding: String,
}

impl Session {
    /// A new session of `name` (`role`), bound to `binding`, from `now` (Unix seconds).
    pub fn new(name: &str, role: Role, binding: String, now: i64) -> Self {
        Self {
            name: name.to_owned(),
            role,
            expires: now + LIFETIME_SECONDS,
            nonce: hex::encode(rand::random::<[u8; 16]>()),
            binding,
        }
    }

    /// What this session's CSRF tokens are made from.
    pub fn csrf_subject(&self) -> String {
        format!("session:{}", self.nonce)
    }
}

/// The `Set-Cookie` value that stores `value` (or, with `None`, deletes the cookie).
pub fn set_cookie(secure: bool, value: Option<&str>) -> String {
    let name = cookie_name(secure);
    let (value, age) = match value {
        Some(v) => (v, LIFETIME_SECONDS),
        None => ("", 0),
    };
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; Max-Age={age}; HttpOnly; SameSite=Strict{secure}")
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn read_cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_sealed_session_opens_until_it_expires_and_holds_no_token() {
        let key = SessionKey::derive("installation-key");
        let s = Session::new("alice", Role::Admin, key.binding(&[7; 32]), NOW);
        let value = key.seal(&s);
        assert_eq!(key.open(&value, NOW + 60), Some(s.clone()));
        assert_eq!(key.open(&value, NOW + LIFETIME_SECONDS), None, "expired");
        assert!(
            !value.contains("alice"),
            "the payload is encoded, not clear text"
        );
        let other = SessionKey::derive("another-installation");
        assert_eq!(other.open(&value, NOW), None, "another installation's key");
    }

    #[test]
    fn a_tampered_cookie_does_not_open() {
        let key = SessionKey::derive("k");
        let s = Session::new("bob", Role::Reader, key.binding(&[1; 32]), NOW);
        let value = key.seal(&s);
        let (payload, sig) = value.split_once('.').unwrap();
        let forged = B64.encode(
            String::from_utf8(B64.decode(payload).unwrap())
                .unwrap()
                .replace("reader", "admin"),
        );
        assert_eq!(key.open(&format!("{forged}.{sig}"), NOW), None);
        assert_eq!(key.open(payload, NOW), None, "no signature");
        assert_eq!(key.open(&format!("{payload}.AAAA"), NOW), None);
        assert_eq!(key.open("", NOW), None);
    }

    #[test]
    fn a_csrf_token_belongs_to_its_subject() {
        let key = SessionKey::derive("k");
        let t = key.csrf("session:abc");
        assert!(key.csrf_ok("session:abc", &t));
        assert!(!key.csrf_ok("session:abd", &t));
        assert!(!key.csrf_ok("session:abc", ""));
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_off_loopback() {
        let c = set_cookie(true, Some("v"));
        assert_eq!(
            c,
            "__Host-br_session=v; Path=/; Max-Age=43200; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(set_cookie(false, None).starts_with("br_session=; Path=/; Max-Age=0; HttpOnly"));
        let mut h = http::HeaderMap::new();
        h.insert(http::header::COOKIE, "a=1; br_session=xyz".parse().unwrap());
        assert_eq!(read_cookie(&h, "br_session"), Some("xyz"));
        assert_eq!(read_cookie(&h, "__Host-br_session"), None);
    }
}
