//! Rotation without a restart: the credential files (`auth.*_file`, typically keys of a
//! Kubernetes Secret mounted as a volume, which the kubelet swaps atomically) are re-read on
//! SIGHUP and whenever their contents change. A reload that fails (a file that cannot be read,
//! a malformed line) keeps the credentials in force, logs the key at fault and counts the
//! failure, so a half-written file never locks Alertmanager or the on-call out. An emptied file
//! is an intent, not a failure: it revokes what it held.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::Auth;
use crate::config::ConfigError;

/// Why a reload happened (a metric label).
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    Signal,
    FileChanged,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "sighup",
            Trigger::FileChanged => "file_changed",
        }
    }
}

/// SHA-256 over the files' paths and contents (an unreadable file counts as its error), so any
/// change of any file changes it.
pub(super) fn fingerprint(files: &[(&'static str, PathBuf)]) -> [u8; 32] {
    let mut h = Sha256::new();
    for (key, path) in files {
        h.update(key.as_bytes());
        match std::fs::read(path) {
            Ok(bytes) => {
                h.update(b"\0ok\0");
                h.update(&bytes);
            }
            Err(e) => {
                h.update(b"\0err\0");
                h.update(e.to_string().as_bytes());
            }
        }
    }
    h.finalize().into()
}

impl Auth {
    /// Re-reads every credential now. On error the credentials in force stay.
    pub fn reload(&self, trigger: Trigger) -> Result<(), ConfigError> {
        let files = self.settings.files();
        let seen = fingerprint(&files);
        if let Ok(mut s) = self.seen.lock() {
            *s = seen;
        }
        match self.settings.credentials() {
            Ok(set) => {
                let changed = *self.snapshot() != set;
                if !set.has_webhook() || !set.has_principals() {
                    // Emptying the files revokes what they held, even the last credential:
                    // say so loudly, since that role is now locked out.
                    tracing::warn!(
                        webhook = set.has_webhook(),
                        api = set.has_principals(),
                        "after this reload a role has no credential at all"
                    );
                }
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(set);
                }
                tracing::info!(trigger = trigger.as_str(), changed, "credentials reloaded");
                crate::metrics::auth_reload(crate::metrics::ReloadOutcome::Ok, trigger.as_str());
                Ok(())
            }
            Err(e) => {
                tracing::error!(trigger = trigger.as_str(), error = %e, "reloading the credentials failed; the previous ones stay in force");
                crate::metrics::auth_reload(crate::metrics::ReloadOutcome::Error, trigger.as_str());
                Err(e)
            }
        }
    }

    /// Whether the files differ from what was last loaded.
    pub(super) fn files_changed(&self) -> bool {
        let now = fingerprint(&self.settings.files());
        self.seen.lock().map(|s| *s != now).unwrap_or(true)
    }

    /// Reloads on SIGHUP and when a credential file changes (checked every
    /// `auth.reload_interval_ms`), until `stop` turns true.
    pub async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let every = Duration::from_millis(self.settings.reload_interval_ms.max(100));
        let poll_files = !self.settings.files().is_empty();
        #[cfg(unix)]
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; credential files are still polled");
                None
            }
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                Some(()) = hangup => {
                    let _ = self.reload(Trigger::Signal);
                }
                _ = tick.tick(), if poll_files => {
                    if self.files_changed() {
                        let _ = self.reload(Trigger::FileChanged);
                    }
                }
            }
        }
    }
}
