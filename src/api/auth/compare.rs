//! Constant-time search of the configured credentials. What the caller presented is hashed
//! first (SHA-256), so every comparison is of 32 bytes whatever its length; then it is compared
//! with every configured credential of its kind, with no early exit, and the first match is
//! picked without a branch on the secret. Neither the time taken nor the order of the list tells
//! which credential matched, or how much of a wrong one was right.

use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::config::{sha256, CredentialSet};

/// Which entry matched, and how many were compared (always all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Scan {
    pub index: Option<usize>,
    pub compared: usize,
}

/// Compares every entry with `matches` and keeps the first that matched.
pub(super) fn scan<T>(entries: &[T], mut matches: impl FnMut(&T) -> Choice) -> Scan {
    let mut found = Choice::from(0);
    let mut index = 0u64;
    let mut compared = 0;
    for (i, entry) in entries.iter().enumerate() {
        let hit = matches(entry);
        index.conditional_assign(&(i as u64), hit & !found);
        found |= hit;
        compared += 1;
    }
    Scan {
        index: bool::from(found).then_some(index as usize),
        compared,
    }
}

fn eq(a: &[u8; 32], b: &[u8; 32]) -> Choice {
    a[..].ct_eq(&b[..])
}

/// The admin or reader whose token is `token`.
pub(super) fn find_principal(set: &CredentialSet, token: &str) -> Scan {
    let given = sha256(token.as_bytes());
    scan(&set.principals, |p| eq(&p.token_sha256, &given))
}

/// The webhook bearer token equal to `token`.
pub(super) fn find_webhook_bearer(set: &CredentialSet, token: &str) -> Scan {
    let given = sha256(token.as_bytes());
    scan(&set.webhook_bearer, |h| eq(h, &given))
}

/// The webhook basic-auth pair equal to (`user`, `password`); both halves are always compared.
pub(super) fn find_webhook_basic(set: &CredentialSet, user: &str, password: &str) -> Scan {
    let (u, p) = (sha256(user.as_bytes()), sha256(password.as_bytes()));
    scan(&set.webhook_basic, |(hu, hp)| eq(hu, &u) & eq(hp, &p))
}
