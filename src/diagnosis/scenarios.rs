//! The scenarios a diagnosis names: the runbook's, and those the service adds beyond it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The runbook's resolution scenarios.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// 1: connection refused / timeout / host unreachable.
    DatabaseConnection,
    /// 2: authentication failed / role does not exist / permission denied.
    Authentication,
    /// 3: no space left on device / disk full.
    Storage,
    /// 5: encryption failed / invalid key / openssl error.
    Encryption,
    /// 4: access denied / bucket does not exist / invalid credentials.
    S3Access,
    /// Every probe healthy, or nothing explains the failure.
    TransientUnknown,
}

impl Scenario {
    /// The runbook's number for the scenario (none for transient/unknown).
    pub fn number(self) -> Option<u8> {
        match self {
            Scenario::DatabaseConnection => Some(1),
            Scenario::Authentication => Some(2),
            Scenario::Storage => Some(3),
            Scenario::S3Access => Some(4),
            Scenario::Encryption => Some(5),
            Scenario::TransientUnknown => None,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Scenario::DatabaseConnection => "database connection",
            Scenario::Authentication => "authentication",
            Scenario::Storage => "storage",
            Scenario::S3Access => "S3 access",
            Scenario::Encryption => "encryption",
            Scenario::TransientUnknown => "transient or unknown",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::DatabaseConnection => "database_connection",
            Scenario::Authentication => "authentication",
            Scenario::Storage => "storage",
            Scenario::S3Access => "s3_access",
            Scenario::Encryption => "encryption",
            Scenario::TransientUnknown => "transient_unknown",
        }
    }
}

