//! What the notifier scrubs from everything it renders, stores or logs: every configured
//! secret value (and the password inside a secret URL); the backup Secret's values join them as
//! the probes read it (`crate::probes::secret::seen_values`).

use secrecy::ExposeSecret;
use serde_json::Value;

use crate::config::Settings;

/// The password of a `scheme://user:password@host` URL, which may appear without the rest.
fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    userinfo.split_once(':').map(|(_, p)| p)
}

/// Every configured secret value (and the password inside a secret URL) worth scrubbing.
pub(super) fn secrets_of(settings: &Settings) -> Vec<String> {
    let n = &settings.notify;
    [
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
    fn a_url_password_is_found_for_scrubbing() {
        assert_eq!(url_password("postgres://u:pw-1@h:5432/db"), Some("pw-1"));
        assert_eq!(url_password("postgres://u@h/db"), None);
        assert_eq!(url_password("https://hooks.slack.com/services/T/B/x"), None);
        assert_eq!(url_password(""), None);
    }
}
