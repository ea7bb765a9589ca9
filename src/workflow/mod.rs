//! The runbook's pipeline: intake (alert → incident) → engine (probes → diagnosis → plan) →
//! remediation (each step through the action gate) → escalation; playbooks (scenario → steps),
//! notifications (Slack, PagerDuty), the pace that lets intake go first under a storm, and the
//! freshness watchdog and the WAL-archive guard, which open incidents no alert announced.

pub mod engine;
pub mod intake;
pub mod notify;
pub mod own_alert;
pub mod pace;
pub mod playbooks;
pub mod remediation;
pub mod wal_guard;
pub mod watchdog;
