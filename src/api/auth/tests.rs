use super::compare::{scan, Scan};
use super::*;
use axum::http::HeaderValue;
use subtle::Choice;

use crate::config::{sha256, Settings};

fn hex_of(token: &str) -> String {
    hex::encode(sha256(token.as_bytes()))
}

fn settings(extra: &str) -> AuthSettings {
    Settings::from_toml(extra).unwrap().auth
}

fn auth() -> Auth {
    Auth::new(&settings(&format!(
        "[auth]\nwebhook_token = \"hook-token\"\nwebhook_tokens = [\"hook-token-new\"]\n\
         webhook_basic_user = \"am\"\nwebhook_basic_password = \"pa:ss\"\n\
         webhook_basic = [\"am:rotated\"]\n\
         api_token = \"api-token\"\nadmin_token = \"admin-token\"\n\
         admins = [\"alice:{}\", {{ name = \"bob\", token_sha256 = \"{}\" }}]\n\
         readers = [\"grafana:{}\"]\n",
        hex_of("alice-token"),
        hex_of("bob-token"),
        hex_of("grafana-token")
    )))
    .unwrap()
}

fn with(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
    h
}

fn basic_header(user_pass: &str) -> HeaderMap {
    with(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    ))
}

#[test]
fn webhook_accepts_every_listed_token_or_basic_and_nothing_else() {
    let a = auth();
    assert!(a.check_webhook(&with("Bearer hook-token")).is_ok());
    assert!(a.check_webhook(&with("bearer hook-token-new")).is_ok());
    assert!(a.check_webhook(&basic_header("am:pa:ss")).is_ok());
    assert!(a.check_webhook(&basic_header("am:rotated")).is_ok());
    assert!(a.check_webhook(&basic_header("am:pass")).is_err());
    assert!(a.check_webhook(&with("Bearer api-token")).is_err());
    assert!(a.check_webhook(&with("Bearer hook-token2")).is_err());
    assert!(a.check_webhook(&HeaderMap::new()).is_err());
}

#[test]
fn api_tokens_identify_their_named_owner_and_role() {
    let a = auth();
    let who = |t: &str| a.check_api(&with(&format!("Bearer {t}"))).unwrap();
    assert_eq!(who("api-token").name, "reader");
    assert_eq!(who("api-token").role, Role::Reader);
    assert_eq!(who("grafana-token").name, "grafana");
    assert_eq!(who("admin-token").name, "admin");
    assert_eq!(who("alice-token").role, Role::Admin);
    assert!(a.check_api(&with("Bearer hook-token")).is_err());
    assert!(a.check_api(&HeaderMap::new()).is_err());
}

#[test]
fn only_admins_pass_the_admin_check_and_none_configured_closes_it() {
    let a = auth();
    assert_eq!(
        a.check_admin(&with("Bearer bob-token")).unwrap().name,
        "bob"
    );
    assert!(a.check_admin(&with("Bearer admin-token")).is_ok());
    assert!(a.check_admin(&with("Bearer grafana-token")).is_err());
    assert!(a.check_admin(&with("Bearer api-token")).is_err());
    let closed = Auth::new(&settings("[auth]\napi_token = \"api-token\"")).unwrap();
    let err = closed.check_admin(&with("Bearer admin-token")).unwrap_err();
    assert!(matches!(err, ApiError::Forbidden(_)), "{err:?}");
}

#[test]
fn insecure_no_auth_opens_reads_and_the_webhook_but_never_the_write_endpoints() {
    let open = Auth::new(&settings("[auth]\ninsecure_no_auth = true")).unwrap();
    assert!(open.check_webhook(&HeaderMap::new()).is_ok());
    assert_eq!(open.check_api(&HeaderMap::new()).unwrap().name, ANONYMOUS);
    let err = open.check_admin(&HeaderMap::new()).unwrap_err();
    assert!(matches!(err, ApiError::Forbidden(_)), "{err:?}");
    // With an admin configured, insecure mode still needs that admin's token to write.
    let with_admin = Auth::new(&settings(
        "[auth]\ninsecure_no_auth = true\nadmin_token = \"admin-token\"",
    ))
    .unwrap();
    assert!(matches!(
        with_admin.check_admin(&HeaderMap::new()),
        Err(ApiError::Unauthorized { .. })
    ));
    assert!(with_admin.check_admin(&with("Bearer admin-token")).is_ok());
}

#[test]
fn x_actor_is_read_as_utf8_or_latin1_and_must_be_printable() {
    assert_eq!(actor("José".as_bytes()).unwrap().as_deref(), Some("José"));
    assert_eq!(actor(b"Jos\xe9").unwrap().as_deref(), Some("José"));
    assert_eq!(actor(b"  ").unwrap(), None);
    assert!(actor(b"a\x07b").is_err());
    assert!(actor("é".repeat(101).as_bytes()).is_err());
    assert_eq!(
        actor("é".repeat(100).as_bytes())
            .unwrap()
            .map(|a| a.chars().count()),
        Some(100)
    );
}

/// The structural proof of constant time: whichever entry matches (first, middle, last, none),
/// the search calls the comparison on every entry and returns the first match.
#[test]
fn the_search_compares_every_entry_whichever_matches() {
    let entries = [10u8, 20, 30, 20, 50];
    for (wanted, index) in [
        (10u8, Some(0)),
        (30, Some(2)),
        (20, Some(1)),
        (50, Some(4)),
        (99, None),
    ] {
        let mut called = Vec::new();
        let found = scan(&entries, |e| {
            called.push(*e);
            Choice::from(u8::from(*e == wanted))
        });
        assert_eq!(called, entries, "every entry compared looking for {wanted}");
        assert_eq!(
            found,
            Scan {
                index,
                compared: entries.len()
            }
        );
    }
}

/// Every kind of credential goes through that search and compares all of its kind.
#[test]
fn every_credential_kind_is_compared_with_all_configured_ones() {
    let set = auth().snapshot();
    let n = set.principals.len();
    assert_eq!(n, 5, "{set:?}");
    for (token, index) in [
        ("admin-token", Some(0)),
        ("bob-token", Some(2)),
        ("grafana-token", Some(4)),
        ("nobody", None),
    ] {
        let s = compare::find_principal(&set, token);
        assert_eq!((s.index, s.compared), (index, n), "{token}");
    }
    let n = set.webhook_bearer.len();
    assert_eq!(n, 2);
    for (token, index) in [
        ("hook-token", Some(0)),
        ("hook-token-new", Some(1)),
        ("x", None),
    ] {
        let s = compare::find_webhook_bearer(&set, token);
        assert_eq!((s.index, s.compared), (index, n), "{token}");
    }
    for (user, pass, index) in [
        ("am", "pa:ss", Some(0)),
        ("am", "rotated", Some(1)),
        ("am", "x", None),
        ("x", "pa:ss", None),
    ] {
        let s = compare::find_webhook_basic(&set, user, pass);
        assert_eq!((s.index, s.compared), (index, 2), "{user}:{pass}");
    }
}

#[test]
fn a_failed_reload_keeps_the_credentials_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("webhook-tokens");
    std::fs::write(&file, "old-token\nnew-token\n").unwrap();
    let mut s = settings("");
    s.webhook_token_file = file.display().to_string();
    let a = Auth::new(&s).unwrap();
    assert!(a.check_webhook(&with("Bearer old-token")).is_ok());

    std::fs::write(&file, "new-token\n").unwrap();
    assert!(a.files_changed());
    a.reload(reload::Trigger::FileChanged).unwrap();
    assert!(a.check_webhook(&with("Bearer old-token")).is_err());
    assert!(a.check_webhook(&with("Bearer new-token")).is_ok());
    assert!(!a.files_changed());

    std::fs::remove_file(&file).unwrap();
    assert!(a.reload(reload::Trigger::Signal).is_err());
    assert!(a.check_webhook(&with("Bearer new-token")).is_ok());
}

#[test]
fn an_emptied_credential_file_revokes_what_it_held_and_a_malformed_one_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("webhook-tokens");
    let pairs = dir.path().join("webhook-basic");
    std::fs::write(&tokens, "leaked-token\n").unwrap();
    std::fs::write(&pairs, "am:basic-pw\n").unwrap();
    let mut s = settings("[auth]\nwebhook_token = \"config-token\"\n");
    s.webhook_token_file = tokens.display().to_string();
    s.webhook_basic_file = pairs.display().to_string();
    let a = Auth::new(&s).unwrap();
    assert!(a.check_webhook(&with("Bearer leaked-token")).is_ok());

    // Revoking a leaked token is emptying its file: it must stop working.
    std::fs::write(&tokens, "").unwrap();
    a.reload(reload::Trigger::FileChanged).unwrap();
    assert!(a.check_webhook(&with("Bearer leaked-token")).is_err());
    assert!(a.check_webhook(&with("Bearer config-token")).is_ok());
    assert!(a.check_webhook(&basic_header("am:basic-pw")).is_ok());

    // A malformed file is a mistake, not an intent: what was in force stays.
    std::fs::write(&pairs, "not a pair\n").unwrap();
    assert!(a.reload(reload::Trigger::FileChanged).is_err());
    assert!(a.check_webhook(&basic_header("am:basic-pw")).is_ok());
}
