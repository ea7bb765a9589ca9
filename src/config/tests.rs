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
    assert_eq!(s.alerts.handled, vec!["PostgreSQLBackupFailed".to_string()]);
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
