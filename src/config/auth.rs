//! The `[auth]` section: who may call the service, read from the config and from secret files.
//!
//! Named API credentials (`admins`, `readers`) are stored as the SHA-256 of the token only; the
//! webhook's bearer tokens and basic-auth pairs are the values Alertmanager sends. Every role takes
//! a list, so old and new credentials are valid together during a rotation, and each list may also
//! come from a file (a Kubernetes Secret volume key) that the service re-reads while it runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::ConfigError;

/// The name the single `auth.admin_token` (`BR_ADMIN_TOKEN`) is recorded under.
pub const LEGACY_ADMIN: &str = "admin";
/// The name the single `auth.api_token` (`BR_API_TOKEN`) is recorded under.
pub const LEGACY_READER: &str = "reader";

/// `[auth]`: see `config/default.toml` for every key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Bearer token Alertmanager sends. Secret.
    pub webhook_token: SecretString,
    /// More bearer tokens valid at the same time (rotation). Secret.
    pub webhook_tokens: Vec<SecretString>,
    /// A file with one webhook bearer token per line; re-read while running.
    pub webhook_token_file: String,
    pub webhook_basic_user: String,
    pub webhook_basic_password: SecretString,
    /// More basic-auth pairs valid at the same time, each `user:password` (rotation). Secret.
    pub webhook_basic: Vec<SecretString>,
    /// A file with one `user:password` per line for the webhook's basic auth; re-read.
    pub webhook_basic_file: String,
    /// The API reader named `reader`. Secret.
    pub api_token: SecretString,
    /// The admin named `admin`: write endpoints (approvals, manual backups, restore tests).
    pub admin_token: SecretString,
    /// Named admins: `{ name, token_sha256 }` tables or `"name:sha256hex"` strings.
    pub admins: Vec<NamedToken>,
    /// A file with one `name:sha256hex` per line; re-read.
    pub admins_file: String,
    /// Named API readers, as `admins`.
    pub readers: Vec<NamedToken>,
    pub readers_file: String,
    /// How often the `*_file` keys are checked for a change (SIGHUP re-reads them at once).
    pub reload_interval_ms: u64,
    pub insecure_no_auth: bool,
    /// With `insecure_no_auth`, allow an explicitly configured address other than loopback.
    pub insecure_no_auth_on_network: bool,
    /// The header an authenticating proxy sets to the signed-in person's name (browser pages
    /// only); empty: no trusted proxy. See [`AuthSettings::trusted_proxy`].
    pub proxy_header: String,
    /// The networks (CIDR) whose connections may set `proxy_header`.
    pub proxy_cidrs: Vec<String>,
    /// Names from `proxy_header` given the admin role.
    pub proxy_admins: Vec<String>,
    /// Names from `proxy_header` given the reader role.
    pub proxy_readers: Vec<String>,
}

/// A named credential as configured: the SHA-256 (hex) of its token, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedToken {
    pub name: String,
    pub token_sha256: String,
}

impl<'de> Deserialize<'de> for NamedToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            name: String,
            token_sha256: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Table(Table),
            Line(String),
        }
        match Repr::deserialize(d)? {
            Repr::Table(t) => Ok(NamedToken {
                name: t.name,
                token_sha256: t.token_sha256,
            }),
            Repr::Line(l) => NamedToken::parse_line(&l).ok_or_else(|| {
                serde::de::Error::custom(
                    "expected { name, token_sha256 } or \"name:sha256hex\" (the name is missing)",
                )
            }),
        }
    }
}

impl NamedToken {
    /// `name:sha256hex`, as in `admins_file` and `BR_AUTH__ADMINS=alice:…,bob:…`.
    fn parse_line(line: &str) -> Option<Self> {
        let (name, hash) = line.trim().rsplit_once(':')?;
        Some(NamedToken {
            name: name.trim().to_owned(),
            token_sha256: hash.trim().to_owned(),
        })
    }
}

crate::domain::names::string_enum!(
    /// What a named credential may do. An admin may also read.
    #[derive(utoipa::ToSchema)]
    pub Role "role" {
        Reader => "reader",
        Admin => "admin",
    }
);

/// One accepted API credential.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub token_sha256: [u8; 32],
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.role.as_str())
    }
}

/// Every credential valid right now, hashed (so comparisons take the same time whatever the
/// length of what was presented).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CredentialSet {
    /// Admins and readers, admins first.
    pub principals: Vec<Principal>,
    /// SHA-256 of each webhook bearer token.
    pub webhook_bearer: Vec<[u8; 32]>,
    /// SHA-256 of each webhook basic-auth (user, password).
    pub webhook_basic: Vec<([u8; 32], [u8; 32])>,
}

impl std::fmt::Debug for CredentialSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialSet")
            .field("principals", &self.principals)
            .field("webhook_bearer", &self.webhook_bearer.len())
            .field("webhook_basic", &self.webhook_basic.len())
            .finish()
    }
}

impl CredentialSet {
    /// Any admin or reader configured.
    pub fn has_principals(&self) -> bool {
        !self.principals.is_empty()
    }
    pub fn has_admins(&self) -> bool {
        self.principals.iter().any(|p| p.role == Role::Admin)
    }
    pub fn has_readers(&self) -> bool {
        self.principals.iter().any(|p| p.role == Role::Reader)
    }
    pub fn has_webhook(&self) -> bool {
        !self.webhook_bearer.is_empty() || !self.webhook_basic.is_empty()
    }
}

/// SHA-256 of `token`, as `backup-remediator token hash` prints it and `token_sha256` holds it.
pub fn sha256(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn invalid(key: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid(format!("{key}: {why}"))
}

/// Reads a secret file: a line per entry; blank lines and `#` comments are skipped. A file with
/// no entry means no credential from it (emptying it is how its tokens are revoked); one that
/// cannot be read is an error, and the caller keeps what was in force.
fn read_lines(key: &str, path: &str) -> Result<Vec<String>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(key, format!("cannot read {path}: {e}")))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

fn parse_hash(key: &str, name: &str, hex_text: &str) -> Result<[u8; 32], ConfigError> {
    let well_formed = hex_text.len() == 64 && hex_text.bytes().all(|b| b.is_ascii_hexdigit());
    let mut out = [0u8; 32];
    if !well_formed || hex::decode_to_slice(hex_text, &mut out).is_err() {
        return Err(invalid(
            key,
            format!(
                "token_sha256 of {name:?} must be 64 hex characters (backup-remediator token hash \
                 prints it), got {} characters",
                hex_text.len()
            ),
        ));
    }
    Ok(out)
}

fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = (1..=64).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "._@-+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!(
                "name {name:?} must be 1 to 64 letters, digits or . _ @ - + (it is recorded as \
                 the decider)"
            ),
        ))
    }
}

impl AuthSettings {
    /// The `*_file` keys that are set, with their paths (watched for changes).
    pub fn files(&self) -> Vec<(&'static str, PathBuf)> {
        [
            ("auth.webhook_token_file", &self.webhook_token_file),
            ("auth.webhook_basic_file", &self.webhook_basic_file),
            ("auth.admins_file", &self.admins_file),
            ("auth.readers_file", &self.readers_file),
        ]
        .into_iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|(k, p)| (k, Path::new(p).to_owned()))
        .collect()
    }

    /// Every credential from the settings and the files, checked: a malformed hash, a duplicate
    /// name, an unreadable file or a malformed line is an error naming its key (an empty file
    /// adds nothing).
    pub fn credentials(&self) -> Result<CredentialSet, ConfigError> {
        let mut set = CredentialSet::default();
        let mut names = BTreeSet::new();
        for (role, legacy, legacy_name, list, list_key, file, file_key) in [
            (
                Role::Admin,
                &self.admin_token,
                LEGACY_ADMIN,
                &self.admins,
                "auth.admins",
                &self.admins_file,
                "auth.admins_file",
            ),
            (
                Role::Reader,
                &self.api_token,
                LEGACY_READER,
                &self.readers,
                "auth.readers",
                &self.readers_file,
                "auth.readers_file",
            ),
        ] {
            let mut add = |key: &str, name: &str, hash: [u8; 32]| -> Result<(), ConfigError> {
                check_name(key, name)?;
                if !names.insert(name.to_owned()) {
                    return Err(invalid(
                        key,
                        format!("duplicate name {name:?}: each credential needs its own name"),
                    ));
                }
                set.principals.push(Principal {
                    name: name.to_owned(),
                    role,
                    token_sha256: hash,
                });
                Ok(())
            };
            let legacy = legacy.expose_secret();
            if !legacy.is_empty() {
                let key = if role == Role::Admin {
                    "auth.admin_token"
                } else {
                    "auth.api_token"
                };
                add(key, legacy_name, sha256(legacy.as_bytes()))?;
            }
            for t in list {
                add(
                    list_key,
                    &t.name,
                    parse_hash(list_key, &t.name, &t.token_sha256)?,
                )?;
            }
            if !file.is_empty() {
                for line in read_lines(file_key, file)? {
                    let t = NamedToken::parse_line(&line)
                        .ok_or_else(|| invalid(file_key, "each line must be name:sha256hex"))?;
                    add(
                        file_key,
                        &t.name,
                        parse_hash(file_key, &t.name, &t.token_sha256)?,
                    )?;
                }
            }
        }
        let mut tokens: Vec<String> = std::iter::once(&self.webhook_token)
            .chain(&self.webhook_tokens)
            .map(|t| t.expose_secret().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        if !self.webhook_token_file.is_empty() {
            tokens.extend(read_lines(
                "auth.webhook_token_file",
                &self.webhook_token_file,
            )?);
        }
        set.webhook_bearer = tokens.iter().map(|t| sha256(t.as_bytes())).collect();
        let user = &self.webhook_basic_user;
        let pass = self.webhook_basic_password.expose_secret();
        if user.is_empty() != pass.is_empty() {
            return Err(invalid(
                "auth.webhook_basic_user",
                "webhook_basic_user and webhook_basic_password go together",
            ));
        }
        if !user.is_empty() {
            set.webhook_basic
                .push((sha256(user.as_bytes()), sha256(pass.as_bytes())));
        }
        let mut pairs: Vec<(&str, String)> = self
            .webhook_basic
            .iter()
            .map(|p| ("auth.webhook_basic", p.expose_secret().to_owned()))
            .collect();
        if !self.webhook_basic_file.is_empty() {
            for line in read_lines("auth.webhook_basic_file", &self.webhook_basic_file)? {
                pairs.push(("auth.webhook_basic_file", line));
            }
        }
        for (key, pair) in pairs {
            let (u, p) = pair
                .split_once(':')
                .filter(|(u, p)| !u.is_empty() && !p.is_empty())
                .ok_or_else(|| invalid(key, "each entry must be user:password"))?;
            set.webhook_basic
                .push((sha256(u.as_bytes()), sha256(p.as_bytes())));
        }
        Ok(set)
    }

    /// The checks `serve` needs: credentials for the webhook and for reading the API, unless
    /// explicitly waived with `insecure_no_auth`.
    pub fn check_serving(&self) -> Result<CredentialSet, ConfigError> {
        if self.reload_interval_ms < 100 {
            return Err(invalid("auth.reload_interval_ms", "must be at least 100"));
        }
        let set = self.credentials()?;
        if !self.insecure_no_auth {
            if !set.has_webhook() {
                return Err(invalid(
                    "auth.webhook_token",
                    "no webhook credentials configured; set BR_WEBHOOK_TOKEN, \
                     auth.webhook_tokens or auth.webhook_token_file (or basic auth), or start \
                     with --insecure-no-auth on a machine nobody else can reach",
                ));
            }
            if !set.has_principals() {
                return Err(invalid(
                    "auth.readers",
                    "no API credential configured; set BR_API_TOKEN (auth.api_token), \
                     auth.readers or auth.readers_file, or start with --insecure-no-auth",
                ));
            }
        }
        Ok(set)
    }
}
