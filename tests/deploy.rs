//! The shipped monitoring files pass the real tools' checks (promtool and amtool come with
//! Debian's prometheus and prometheus-alertmanager packages; scripts/test.sh installs them).

use std::process::Command;

fn check(tool: &str, args: &[&str]) {
    let out = Command::new(tool).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap_or_else(|e| {
        panic!("{tool} could not run ({e}): run scripts/test.sh, or apt-get install prometheus prometheus-alertmanager")
    });
    assert!(
        out.status.success(),
        "{tool} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alert_rules_pass_promtool() {
    check(
        "promtool",
        &["check", "rules", "deploy/prometheus-rules.yml"],
    );
}

#[test]
fn the_alertmanager_receiver_passes_amtool() {
    check("amtool", &["check-config", "deploy/alertmanager.yml"]);
}
