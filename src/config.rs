//! Typed settings, layered: compiled-in defaults (`config/default.toml`) → an optional config
//! file → environment variables → command-line overrides. Secrets are [`SecretString`]s, so
//! `Debug` never prints them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use secrecy::ExposeSecret;
use serde::Deserialize;

mod auth;
mod env;
mod proxy;
mod sections;
mod sources;
mod targets;
pub use auth::*;
pub use env::{var_name, EnvLayer, ALIASES as ENV_ALIASES};
pub use proxy::{Cidr, TrustedProxy};
pub use sections::*;
pub use sources::{BackupSettings, CloudNativePgSettings, PgBackRestSettings, WalArchiveSettings};
pub use targets::{Target, TargetChoice, TargetEntry, OVERRIDABLE as TARGET_SECTIONS};

/// The defaults shipped with the binary; the same file documents every key.
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

/// Everything the service can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub auth: AuthSettings,
    pub alerts: AlertSettings,
    pub dedupe: DedupeSettings,
    pub log: LogSettings,
    pub probes: ProbeSettings,
    pub prometheus: PrometheusSettings,
    pub kubernetes: KubeSettings,
    pub target: TargetSettings,
    pub disk: DiskSettings,
    pub s3: S3Settings,
    pub iam: IamSettings,
    pub encryption: EncryptionSettings,
    pub remediation: RemediationSettings,
    pub restore_test: RestoreTestSettings,
    pub manual_backup: ManualBackupSettings,
    pub notify: NotifySettings,
    pub watchdog: WatchdogSettings,
    pub backup: BackupSettings,
    pub pgbackrest: PgBackRestSettings,
    pub cloudnativepg: CloudNativePgSettings,
    pub wal_archive: WalArchiveSettings,
    /// `[[targets]]` as written; empty: one target implied by the top-level sections.
    #[serde(default)]
    pub targets: Vec<TargetEntry>,
    /// The resolved targets (at least one), each with its complete settings.
    #[serde(skip)]
    pub fleet: Vec<Target>,
}

/// What went wrong while reading the configuration. The message names the key and its source.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
}

/// Command-line values that win over every other layer (only those given).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    pub insecure_no_auth: bool,
    pub insecure_no_auth_on_network: bool,
}

impl serde::Serialize for LogFormat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
        })
    }
}

impl Settings {
    /// Reads the layers from the real environment.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::from_figment(Self::figment(file, overrides)?)
    }

    /// The layered sources over the process environment, exposed so tests can add their own
    /// layer (e.g. `Figment::join`).
    pub fn figment(file: Option<&Path>, overrides: &Overrides) -> Result<Figment, ConfigError> {
        Self::figment_with_env(file, overrides, EnvLayer::from_process()?)
    }

    /// The layered sources with `env` as the environment layer.
    pub fn figment_with_env(
        file: Option<&Path>,
        overrides: &Overrides,
        env: EnvLayer,
    ) -> Result<Figment, ConfigError> {
        let mut fig = Figment::from(Toml::string(DEFAULT_CONFIG));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.to_owned()));
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig.merge(env);
        let mut cli = serde_json::Map::new();
        let mut put = |section: &str, key: &str, value: serde_json::Value| {
            let entry = cli
                .entry(section.to_owned())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if let Some(obj) = entry.as_object_mut() {
                obj.insert(key.to_owned(), value);
            }
        };
        if let Some(listen) = overrides.listen {
            put("server", "listen", listen.to_string().into());
        }
        if let Some(url) = &overrides.database_url {
            put("database", "url", url.clone().into());
        }
        if let Some(format) = overrides.log_format {
            put(
                "log",
                "format",
                serde_json::to_value(format).unwrap_or_default(),
            );
        }
        if overrides.insecure_no_auth {
            put("auth", "insecure_no_auth", true.into());
        }
        if overrides.insecure_no_auth_on_network {
            put("auth", "insecure_no_auth_on_network", true.into());
        }
        Ok(fig.merge(Serialized::defaults(serde_json::Value::Object(cli))))
    }

    /// The built-in defaults with `extra` TOML laid over them; no environment. For tests and tools.
    pub fn from_toml(extra: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::from(Toml::string(DEFAULT_CONFIG)).merge(Toml::string(extra)))
    }

    /// Extracts and checks the settings.
    pub fn from_figment(fig: Figment) -> Result<Self, ConfigError> {
        let mut settings: Settings = fig.extract().map_err(|e| {
            // figment's error names the key and the source that set it; keep every error.
            ConfigError::Invalid(
                e.into_iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        settings.validate()?;
        settings.fleet = targets::resolve(&fig, &settings)?;
        Ok(settings)
    }

    /// The checks only `serve` needs: credentials must be configured unless explicitly waived,
    /// and every credential file must read.
    pub fn check_serving(&self) -> Result<CredentialSet, ConfigError> {
        self.auth.check_serving()
    }

    /// With `insecure_no_auth` the service binds loopback unless an address was named
    /// explicitly (`--listen`, or a `server.listen` other than the default); an explicit address
    /// other than loopback needs `insecure_no_auth_on_network`. Returns whether the service is
    /// then reachable from the network (the caller warns loudly).
    pub fn secure_insecure_listen(&mut self, cli_listen: bool) -> Result<bool, ConfigError> {
        if !self.auth.insecure_no_auth {
            return Ok(false);
        }
        let default = Self::from_toml("")?.server.listen;
        let explicit = cli_listen || self.server.listen != default;
        if !explicit {
            self.server
                .listen
                .set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            return Ok(false);
        }
        if self.server.listen.ip().is_loopback() {
            return Ok(false);
        }
        if !self.auth.insecure_no_auth_on_network {
            return Err(ConfigError::Invalid(format!(
                "server.listen: {} is reachable from the network and --insecure-no-auth turns \
                 authentication off; listen on 127.0.0.1, configure credentials, or add \
                 --insecure-no-auth-on-network if you really mean it",
                self.server.listen
            )));
        }
        Ok(true)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("{key}: {why}")));
        if self.server.body_limit_bytes < 1024 {
            return bad("server.body_limit_bytes", "must be at least 1024");
        }
        for (key, ms) in [
            (
                "server.header_read_timeout_ms",
                self.server.header_read_timeout_ms,
            ),
            ("server.body_timeout_ms", self.server.body_timeout_ms),
            ("server.idle_timeout_ms", self.server.idle_timeout_ms),
        ] {
            if ms < 100 {
                return bad(key, "must be at least 100");
            }
        }
        if self.server.max_connections == 0 {
            return bad("server.max_connections", "must be at least 1");
        }
        self.auth.trusted_proxy()?;
        if self.database.max_connections == 0 {
            return bad("database.max_connections", "must be at least 1");
        }
        if self.dedupe.flush_interval_ms == 0 {
            return bad("dedupe.flush_interval_ms", "must be at least 1");
        }
        if self.dedupe.cache_capacity == 0 {
            return bad("dedupe.cache_capacity", "must be at least 1");
        }
        if !self.kubernetes.api_url.is_empty() && !self.kubernetes.kubeconfig.is_empty() {
            return bad(
                "kubernetes.kubeconfig",
                "set either kubernetes.api_url or kubernetes.kubeconfig, not both",
            );
        }
        if self.probes.deadline_ms == 0 {
            return bad("probes.deadline_ms", "must be at least 1");
        }
        if self.probes.concurrency == 0 {
            return bad("probes.concurrency", "must be at least 1");
        }
        for name in &self.probes.enabled {
            if !crate::domain::finding::is_probe(name) {
                return Err(ConfigError::Invalid(format!(
                    "probes.enabled: unknown probe {name:?}; known: {}, {}",
                    crate::domain::finding::NAMES.join(", "),
                    crate::domain::finding::SOURCE_NAMES.join(", ")
                )));
            }
        }
        if !(0.0..=100.0).contains(&self.disk.threshold_percent) {
            return bad("disk.threshold_percent", "must be between 0 and 100");
        }
        if self.target.databases.is_empty() {
            return bad("target.databases", "must name at least one database");
        }
        if self.remediation.max_concurrent_actions < 1 {
            return bad("remediation.max_concurrent_actions", "must be at least 1");
        }
        if self.restore_test.targets_per_period == 0 {
            return bad("restore_test.targets_per_period", "must be at least 1");
        }
        if self.remediation.lease_seconds < 3 {
            return bad("remediation.lease_seconds", "must be at least 3");
        }
        if !["auto", "schema_grants"].contains(&self.remediation.read_access.as_str()) {
            return bad("remediation.read_access", "must be auto or schema_grants");
        }
        let prefix = &self.remediation.job_name_prefix;
        if prefix.is_empty()
            || prefix.len() > 40
            || !prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return bad(
                "remediation.job_name_prefix",
                "must be 1 to 40 lowercase letters, digits or dashes",
            );
        }
        self.validate_runbook_operations()?;
        if self.alerts.handled.is_empty() {
            return bad("alerts.handled", "must name at least one alert");
        }
        self.notify.validate()?;
        self.validate_sources()?;
        if self.watchdog.interval_minutes == 0 || self.watchdog.interval_minutes > 24 * 60 {
            return bad("watchdog.interval_minutes", "must be 1 to 1440");
        }
        let stale = crate::domain::alert::BACKUP_STALE;
        if self.watchdog.enabled && !self.alerts.handled.iter().any(|a| a == stale) {
            return Err(ConfigError::Invalid(format!(
                "watchdog.enabled: the watchdog opens {stale} incidents; add {stale} to alerts.handled or set watchdog.enabled = false"
            )));
        }
        let url = self.database.url.expose_secret();
        if !(url.is_empty()
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.starts_with("sqlite:"))
        {
            return bad(
                "database.url",
                "must start with postgres://, postgresql:// or sqlite:",
            );
        }
        Ok(())
    }
}

impl Settings {
    /// Checks the `[restore_test]` and `[manual_backup]` sections.
    fn validate_runbook_operations(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("{key}: {why}")));
        let r = &self.restore_test;
        if r.schedule_hours == 0 {
            return bad("restore_test.schedule_hours", "must be at least 1");
        }
        if r.timeout_seconds == 0 {
            return bad("restore_test.timeout_seconds", "must be at least 1");
        }
        let ident = |s: &str, max: usize| {
            !s.is_empty()
                && s.len() <= max
                && s.starts_with(|c: char| c.is_ascii_lowercase())
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        if !ident(&r.scratch_prefix, 20) {
            return bad(
                "restore_test.scratch_prefix",
                "must be 1 to 20 lowercase letters, digits or underscores, starting with a letter",
            );
        }
        if !(r.rto_minutes.is_finite() && r.rto_minutes >= 0.0) {
            return bad(
                "restore_test.rto_minutes",
                "must be a number of minutes, 0 (no limit) or more",
            );
        }
        for (i, c) in r.checks.iter().enumerate() {
            let key = format!("restore_test.checks[{i}]");
            if !self.target.databases.contains(&c.database) {
                return bad(
                    &format!("{key}.database"),
                    &format!("{:?} is not one of target.databases", c.database),
                );
            }
            if c.name.trim().is_empty() || c.sql.trim().is_empty() {
                return bad(&key, "needs a name and an sql query");
            }
            if r.checks[..i]
                .iter()
                .any(|o| o.database == c.database && o.name == c.name)
            {
                return bad(
                    &format!("{key}.name"),
                    &format!("{:?} is used twice for {}", c.name, c.database),
                );
            }
        }
        let url = r.target_url.expose_secret();
        if !(url.is_empty() || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return bad(
                "restore_test.target_url",
                "must be empty or start with postgres:// or postgresql://",
            );
        }
        let m = &self.manual_backup;
        if m.image.trim().is_empty() {
            return bad("manual_backup.image", "must name an image");
        }
        if m.storage_class.is_empty()
            || !m
                .storage_class
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_')
        {
            return bad(
                "manual_backup.storage_class",
                "must be an S3 storage class such as STANDARD_IA",
            );
        }
        if m.subdir.is_empty()
            || m.subdir.starts_with('/')
            || m.subdir.ends_with('/')
            || m.subdir.split('/').any(|p| p.is_empty() || p == "..")
        {
            return bad(
                "manual_backup.subdir",
                "must be a relative path without leading or trailing /",
            );
        }
        let prefix = &m.job_name_prefix;
        if prefix.is_empty()
            || prefix.len() > 35
            || !prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return bad(
                "manual_backup.job_name_prefix",
                "must be 1 to 35 lowercase letters, digits or dashes",
            );
        }
        let account = &m.service_account;
        if account.is_empty()
            || account.len() > 253
            || !account
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            return bad(
                "manual_backup.service_account",
                "must be a ServiceAccount name (lowercase letters, digits, dashes, dots)",
            );
        }
        if let Some(key) = m.resources.invalid_key() {
            return bad(
                &key,
                "must be cpu, memory or ephemeral-storage with a quantity such as 250m, 512Mi or 10Gi",
            );
        }
        if m.deadline_seconds == 0 {
            return bad("manual_backup.deadline_seconds", "must be at least 1");
        }
        if m.backoff_limit < 0 || m.ttl_seconds_after_finished < 0 {
            return bad(
                "manual_backup.backoff_limit",
                "backoff_limit and ttl_seconds_after_finished must not be negative",
            );
        }
        Ok(())
    }
}

impl NotifySettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("notify.{key}: {why}")));
        let http = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        if !self.slack_token.expose_secret().is_empty() && self.slack_channel.is_empty() {
            return bad("slack_channel", "a bot token needs the channel to post to");
        }
        let hook = self.slack_webhook_url.expose_secret();
        if !hook.is_empty() && !http(hook) {
            return bad("slack_webhook_url", "must be an http(s) URL");
        }
        if !http(&self.slack_api_url) {
            return bad("slack_api_url", "must be an http(s) URL");
        }
        let approvers = !self.slack_approvers.is_empty() || !self.slack_approvers_file.is_empty();
        if approvers && self.slack_signing_secret.expose_secret().is_empty() {
            return bad(
                "slack_signing_secret",
                "notify.slack_approvers is set: Slack clicks cannot be verified without the app's signing secret (BR_NOTIFY__SLACK_SIGNING_SECRET)",
            );
        }
        if let Some(id) = self.slack_approvers.iter().find(|id| !slack_user_id(id)) {
            return bad(
                "slack_approvers",
                &format!("{id:?} is not a Slack user id (U0123ABCD or W0123ABCD)"),
            );
        }
        if !http(&self.pagerduty_url) {
            return bad("pagerduty_url", "must be an http(s) URL");
        }
        if !self.external_url.is_empty() && !http(&self.external_url) {
            return bad("external_url", "must be an http(s) URL or empty");
        }
        if self.rpo_hours == 0 {
            return bad("rpo_hours", "must be at least 1");
        }
        if self.poll_interval_ms == 0 || self.request_timeout_ms == 0 {
            return bad(
                "poll_interval_ms",
                "poll_interval_ms and request_timeout_ms must be at least 1",
            );
        }
        if self.max_backoff_seconds == 0 {
            return bad("max_backoff_seconds", "must be at least 1");
        }
        Ok(())
    }
}

/// A Slack user id as Slack sends it: `U` or `W` and upper-case letters and digits.
/// Whether `id` has the shape of a Slack user id (`U0123ABCD`, `W0123ABCD`).
pub fn slack_user_id(id: &str) -> bool {
    id.len() >= 3
        && id.len() <= 32
        && (id.starts_with('U') || id.starts_with('W'))
        && id
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

#[cfg(test)]
mod tests;
