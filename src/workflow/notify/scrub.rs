//! What the notifier scrubs from everything it renders, stores or logs: every configured
//! secret value (and the password inside a secret URL: the store, the admin connection, the
//! restore target, Prometheus), every listed webhook token and basic-auth pair; the backup
//! Secret's values join them as the probes read it (`crate::probes::secret::seen_values`).

use secrecy::ExposeSecret;
use serde_json::Value;

use crate::config::Settings;

/// The password of a `scheme://user:password@host` URL, which may appear without the rest.
fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    userinfo.split_once(':').map(|(_, p)| p)
}

/// The password of a `user:password` pair (`auth.webhook_basic`).
fn pair_password(pair: &str) -> Option<&str> {
    pair.split_once(':').map(|(_, p)| p)
}

/// Every configured secret value (and the password inside a secret URL) worth scrubbing.
pub(super) fn secrets_of(settings: &Settings) -> Vec<String> {
    let n = &settings.notify;
    let auth = &settings.auth;
    let lists = auth.webhook_tokens.iter().map(|t| t.expose_secret());
    let pairs = auth
        .webhook_basic
        .iter()
        .flat_map(|p| [Some(p.expose_secret()), pair_password(p.expose_secret())])
        .flatten();
    [
        settings.restore_test.target_url.expose_secret(),
        // Not a secret as a whole, but its user:password is.
        url_password(&settings.prometheus.url).unwrap_or_default(),
        n.slack_token.expose_secret(),
        n.slack_webhook_url.expose_secret(),
        n.slack_signing_secret.expose_secret(),
        n.pagerduty_routing_key.expose_secret(),
        settings.auth.webhook_token.expose_secret(),
        settings.auth.webhook_basic_password.expose_secret(),
        settings.auth.api_token.expose_secret(),
        settings.auth.admin_token.expose_secret(),
        settings.database.url.expose_secret(),
        settings.remediation.admin_database_url.expose_secret(),
        settings.iam.secret_access_key.expose_secret(),
    ]
    .into_iter()
    .chain(lists)
    .chain(pairs)
    .flat_map(|s| [Some(s), url_password(s)])
    .flatten()
    .filter(|s| s.len() >= 4)
    .map(str::to_owned)
    .collect()
}

pub(super) fn scrub_text(secrets: &[String], s: &str) -> String {
    secrets.iter().fold(s.to_owned(), |acc, secret| {
        acc.replace(secret.as_str(), "[redacted]")
    })
}

pub(super) fn scrub_value(secrets: &[String], v: &mut Value) {
    match v {
        Value::String(s) => *s = scrub_text(secrets, s),
        Value::Array(a) => a.iter_mut().for_each(|x| scrub_value(secrets, x)),
        Value::Object(o) => o.values_mut().for_each(|x| scrub_value(secrets, x)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configured_secrets_are_scrubbed_from_nested_json() {
        let settings = Settings::from_toml(
            "[notify]\nslack_token = \"xoxb-secret-1\"\nslack_channel = \"C1\"\n\
             [database]\nurl = \"postgres://u:db-pass-2@h/d\"",
        )
        .unwrap();
        let n = secrets_of(&settings);
        let mut v = json!({ "a": ["token xoxb-secret-1", { "b": "pw db-pass-2 here" }], "c": 1 });
        scrub_value(&n, &mut v);
        assert_eq!(
            v,
            json!({ "a": ["token [redacted]", { "b": "pw [redacted] here" }], "c": 1 })
        );
    }

    #[test]
    fn the_restore_target_the_webhook_token_lists_and_a_prometheus_password_are_scrubbed() {
        let settings = Settings::from_toml(
            "[restore_test]\ntarget_url = \"postgres://restorer:restore-pw-3@h/postgres\"\n\
             [auth]\nwebhook_tokens = [\"listed-token-4\"]\n\
             webhook_basic = [\"alertmanager:basic-pw-5\"]\n\
             [prometheus]\nurl = \"http://scrape:prom-pw-6@prometheus:9090\"",
        )
        .unwrap();
        let n = secrets_of(&settings);
        let text = "postgres://restorer:restore-pw-3@h/postgres listed-token-4 basic-pw-5 \
                    http://scrape:prom-pw-6@prometheus:9090";
        let scrubbed = scrub_text(&n, text);
        for secret in ["restore-pw-3", "listed-token-4", "basic-pw-5", "prom-pw-6"] {
            assert!(!scrubbed.contains(secret), "{secret} in {scrubbed}");
        }
    }

    #[test]
    fn a_url_password_is_found_for_scrubbing() {
        assert_eq!(url_password("postgres://u:pw-1@h:5432/db"), Some("pw-1"));
        assert_eq!(url_password("postgres://u@h/db"), None);
        assert_eq!(url_password("https://hooks.slack.com/services/T/B/x"), None);
        assert_eq!(url_password(""), None);
    }
}
