//! The settings: defaults, unknown keys, secrets kept out of `Debug`.
use super::*;

fn with(toml: &str) -> Result<Settings, ConfigError> {
    let fig = Figment::from(Toml::string(DEFAULT_CONFIG)).merge(Toml::string(toml));
    Settings::from_figment(fig)
}

#[test]
fn defaults_refuse_to_serve_without_credentials() {
    let err = with("").unwrap().check_serving().unwrap_err().to_string();
    assert!(err.contains("auth.webhook_token"), "{err}");
}

#[test]
fn insecure_no_auth_starts_with_the_defaults() {
    let s = with("[auth]\ninsecure_no_auth = true").unwrap();
    s.check_serving().unwrap();
    assert_eq!(s.server.listen.port(), 9095);
    assert_eq!(s.server.body_limit_bytes, 1024 * 1024);
    assert_eq!(
        s.alerts.handled,
        ["PostgreSQLBackupFailed", "PostgreSQLBackupStale"]
    );
}

#[test]
fn a_wrong_type_names_the_key() {
    let err = with("[server]\nbody_limit_bytes = \"big\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("body_limit_bytes"), "{err}");
}

#[test]
fn an_unknown_key_is_an_error_naming_it() {
    let err = with("[server]\nlisten_adress = \"1.2.3.4:1\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("listen_adress"), "{err}");
}

#[test]
fn debug_output_never_shows_a_token() {
    let s = with("[auth]\nwebhook_token = \"canary-7f3a\"\napi_token = \"canary-9b1c\"").unwrap();
    let shown = format!("{s:?}");
    assert!(!shown.contains("canary"), "{shown}");
}

#[test]
fn notifications_are_off_by_default_and_a_token_needs_a_channel() {
    let s = with("").unwrap();
    assert!(s.notify.slack_token.expose_secret().is_empty());
    assert_eq!(s.notify.escalate_after_hours, 2);
    assert_eq!(s.notify.rpo_hours, 24);
    let err = with("[notify]\nslack_token = \"xoxb-canary\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("notify.slack_channel"), "{err}");
    assert!(!err.contains("canary"), "{err}");
}

#[test]
fn half_configured_basic_auth_is_refused() {
    let s = with("[auth]\napi_token=\"a\"\nwebhook_basic_user = \"am\"").unwrap();
    let err = s.check_serving().unwrap_err().to_string();
    assert!(err.contains("webhook_basic"), "{err}");
}

fn hash_of(token: &str) -> String {
    hex::encode(sha256(token.as_bytes()))
}

fn serving_error(toml: &str) -> String {
    with(&format!(
        "[auth]\napi_token = \"a\"\nwebhook_token = \"w\"\n{toml}"
    ))
    .and_then(|s| s.check_serving().map(|_| ()))
    .unwrap_err()
    .to_string()
}

#[test]
fn a_token_sha256_that_is_not_64_hex_characters_stops_start_up_naming_the_key() {
    let short = serving_error("admins = [\"alice:abc123\"]");
    assert!(short.contains("auth.admins"), "{short}");
    assert!(short.contains("64 hex"), "{short}");
    let not_hex = serving_error(&format!(
        "readers = [{{ name = \"dash\", token_sha256 = \"{}\" }}]",
        "g".repeat(64)
    ));
    assert!(not_hex.contains("auth.readers"), "{not_hex}");
    // The token itself pasted where its hash belongs is refused, and not echoed.
    let pasted = serving_error("admins = [\"alice:s3cr3t-token-canary\"]");
    assert!(!pasted.contains("canary"), "{pasted}");
}

#[test]
fn duplicate_names_stop_start_up_naming_the_key() {
    let h = hash_of("t1");
    let err = serving_error(&format!(
        "admins = [\"alice:{h}\", \"alice:{}\"]",
        hash_of("t2")
    ));
    assert!(
        err.contains("auth.admins") && err.contains("duplicate"),
        "{err}"
    );
    // The single admin token is the admin named "admin": a listed "admin" collides with it.
    let err = serving_error(&format!("admin_token = \"x\"\nadmins = [\"admin:{h}\"]"));
    assert!(
        err.contains("auth.admins") && err.contains("\"admin\""),
        "{err}"
    );
    // One name is one person: not an admin and a reader at once.
    let err = serving_error(&format!("admins = [\"bob:{h}\"]\nreaders = [\"bob:{h}\"]"));
    assert!(
        err.contains("auth.readers") && err.contains("duplicate"),
        "{err}"
    );
}

#[test]
fn credential_files_that_cannot_be_read_or_are_malformed_stop_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = serving_error(&format!("admins_file = \"{}\"", missing.display()));
    assert!(err.contains("auth.admins_file"), "{err}");
    // An empty file adds no credential (emptying it revokes); a role left with none at all
    // still stops start-up.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "# all revoked\n\n").unwrap();
    for key in ["webhook_token_file", "webhook_basic_file", "readers_file"] {
        let toml = format!(
            "[auth]\napi_token = \"a\"\nwebhook_token = \"w\"\n{key} = \"{}\"",
            empty.display()
        );
        assert!(with(&toml).unwrap().check_serving().is_ok(), "{key}");
    }
    let only_empty = format!(
        "[auth]\napi_token = \"a\"\nwebhook_token_file = \"{}\"",
        empty.display()
    );
    let err = with(&only_empty)
        .unwrap()
        .check_serving()
        .unwrap_err()
        .to_string();
    assert!(err.contains("no webhook credentials"), "{err}");
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "alice\n").unwrap();
    let err = serving_error(&format!("admins_file = \"{}\"", bad.display()));
    assert!(err.contains("auth.admins_file"), "{err}");
}

#[test]
fn named_credentials_come_from_tables_strings_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admins");
    std::fs::write(&file, format!("# on call\ncarol:{}\n", hash_of("c"))).unwrap();
    let s = with(&format!(
        "[auth]\nadmin_token = \"legacy\"\napi_token = \"r\"\nwebhook_token = \"w\"\n\
         admins = [{{ name = \"alice\", token_sha256 = \"{}\" }}, \"bob:{}\"]\n\
         admins_file = \"{}\"",
        hash_of("a"),
        hash_of("b").to_uppercase(),
        file.display()
    ))
    .unwrap();
    let set = s.check_serving().unwrap();
    let names: Vec<_> = set
        .principals
        .iter()
        .map(|p| (p.name.as_str(), p.role.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("admin", "admin"),
            ("alice", "admin"),
            ("bob", "admin"),
            ("carol", "admin"),
            ("reader", "reader")
        ]
    );
    assert_eq!(set.principals[2].token_sha256, sha256(b"b"));
}

#[test]
fn named_credentials_are_settable_from_the_environment() {
    let env = EnvLayer::from_vars([
        (
            "BR_AUTH__ADMINS",
            format!("alice:{},bob:{}", hash_of("a"), hash_of("b")),
        ),
        ("BR_AUTH__WEBHOOK_TOKENS", "old,new".to_owned()),
        ("BR_API_TOKEN", "r".to_owned()),
    ])
    .unwrap();
    let fig = Settings::figment_with_env(None, &Overrides::default(), env).unwrap();
    let s = Settings::from_figment(fig).unwrap();
    let set = s.check_serving().unwrap();
    assert_eq!(set.principals.len(), 3);
    assert_eq!(set.webhook_bearer, [sha256(b"old"), sha256(b"new")]);
}

#[test]
fn insecure_no_auth_binds_loopback_unless_an_address_is_named() {
    let mut s = with("[auth]\ninsecure_no_auth = true").unwrap();
    assert!(!s.secure_insecure_listen(false).unwrap());
    assert_eq!(s.server.listen.to_string(), "127.0.0.1:9095");

    let mut s =
        with("[auth]\ninsecure_no_auth = true\n[server]\nlisten = \"0.0.0.0:9999\"").unwrap();
    let err = s.secure_insecure_listen(false).unwrap_err().to_string();
    assert!(
        err.contains("server.listen") && err.contains("--insecure-no-auth-on-network"),
        "{err}"
    );

    let mut s =
        with("[auth]\ninsecure_no_auth = true\ninsecure_no_auth_on_network = true").unwrap();
    assert!(
        s.secure_insecure_listen(true).unwrap(),
        "named on the command line"
    );
    assert_eq!(s.server.listen.to_string(), "0.0.0.0:9095");

    let mut s =
        with("[auth]\ninsecure_no_auth = true\n[server]\nlisten = \"127.0.0.1:9999\"").unwrap();
    assert!(!s.secure_insecure_listen(false).unwrap());
    // Without insecure_no_auth nothing changes.
    let mut s = with("").unwrap();
    assert!(!s.secure_insecure_listen(false).unwrap());
    assert_eq!(s.server.listen.to_string(), "0.0.0.0:9095");
}

#[test]
fn the_watchdog_needs_its_alert_handled_and_a_sane_period() {
    let err = with("[alerts]\nhandled = [\"PostgreSQLBackupFailed\"]").unwrap_err();
    assert!(
        err.to_string().contains("watchdog.enabled") && err.to_string().contains("alerts.handled"),
        "{err}"
    );
    let off = "[alerts]\nhandled = [\"PostgreSQLBackupFailed\"]\n[watchdog]\nenabled = false";
    assert!(with(off).is_ok());
    let err = with("[watchdog]\ninterval_minutes = 0").unwrap_err();
    assert!(
        err.to_string().contains("watchdog.interval_minutes"),
        "{err}"
    );
    let env = EnvLayer::from_vars([("BR_WATCHDOG__INTERVAL_MINUTES", "5")]).unwrap();
    let s = Settings::from_figment(Figment::from(Toml::string(DEFAULT_CONFIG)).merge(env)).unwrap();
    assert_eq!(s.watchdog.interval_minutes, 5);
}

#[test]
fn slack_approvers_need_the_signing_secret_and_real_user_ids() {
    let err = with("[notify]\nslack_approvers = [\"U0123ABCD\"]")
        .unwrap_err()
        .to_string();
    assert!(err.contains("notify.slack_signing_secret"), "{err}");
    let err = with(
        "[notify]\nslack_signing_secret = \"canary-signing-1\"\nslack_approvers = [\"alice\"]",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("notify.slack_approvers") && err.contains("alice"),
        "{err}"
    );
    assert!(!err.contains("canary"), "{err}");
    let s = with(
        "[notify]\nslack_signing_secret = \"canary-signing-1\"\nslack_approvers = [\"U0123ABCD\", \"W0123ABCD\"]",
    )
    .unwrap();
    assert_eq!(s.notify.slack_approvers, ["U0123ABCD", "W0123ABCD"]);
    assert!(!format!("{s:?}").contains("canary-signing-1"));
}

#[test]
fn restore_checks_name_a_configured_database_and_the_rto_is_a_number_of_minutes() {
    let s = with(
        "[target]\ndatabases = [\"app\"]\n[restore_test]\nrto_minutes = 7.5\n\
         [[restore_test.checks]]\ndatabase = \"app\"\nname = \"orders fresh\"\n\
         sql = \"select max(created_at) > now() - interval '26 hours' from orders\"\n",
    )
    .unwrap();
    assert_eq!(s.restore_test.rto_minutes, 7.5);
    assert_eq!(s.restore_test.checks[0].name, "orders fresh");
    let err = |toml: &str| with(toml).unwrap_err().to_string();
    let e = err("[target]\ndatabases = [\"app\"]\n[[restore_test.checks]]\ndatabase = \"other\"\nname = \"n\"\nsql = \"select true\"\n");
    assert!(
        e.contains("restore_test.checks[0].database") && e.contains("other"),
        "{e}"
    );
    let twice =
        "[[restore_test.checks]]\ndatabase = \"app\"\nname = \"n\"\nsql = \"select true\"\n";
    let e = err(&format!("[target]\ndatabases = [\"app\"]\n{twice}{twice}"));
    assert!(e.contains("restore_test.checks[1].name"), "{e}");
    let e = err("[restore_test]\nrto_minutes = -1\n");
    assert!(e.contains("restore_test.rto_minutes"), "{e}");
    // The same from the environment.
    let env = EnvLayer::from_vars([
        ("BR_TARGET__DATABASES", "app"),
        ("BR_RESTORE_TEST__RTO_MINUTES", "12"),
        (
            "BR_RESTORE_TEST__CHECKS",
            "[{database = \"app\", name = \"fresh\", sql = \"select true\"}]",
        ),
    ])
    .unwrap();
    let s = Settings::from_figment(Figment::from(Toml::string(DEFAULT_CONFIG)).merge(env)).unwrap();
    assert_eq!(s.restore_test.rto_minutes, 12.0);
    assert_eq!(
        s.restore_test.checks,
        [RestoreCheck {
            database: "app".into(),
            name: "fresh".into(),
            sql: "select true".into()
        }]
    );
}
