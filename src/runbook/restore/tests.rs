//! The restore test's pure parts: table of contents, key matching, names, the target URL.
use super::*;
use secrecy::{ExposeSecret, SecretString};

#[test]
fn the_table_of_contents_names_tables_and_their_data() {
    let listing = ";\n; Archive created at 2026-11-25 01:02:03 UTC\n;     dbname: link_users\n;\n\
        215; 1259 16385 TABLE public accounts postgres\n\
        216; 1259 16390 TABLE public order lines postgres\n\
        217; 1259 16391 SEQUENCE public accounts_id_seq postgres\n\
        3340; 0 16385 TABLE DATA public accounts postgres\n\
        3341; 0 16390 TABLE DATA public order lines postgres\n\
        3190; 2606 16395 CONSTRAINT public accounts accounts_pkey postgres\n";
    let toc = parse_toc(listing);
    let t = |s: &str, n: &str| TableRef {
        schema: s.into(),
        name: n.into(),
    };
    assert_eq!(toc.entries, 6);
    assert_eq!(
        toc.tables,
        [t("public", "accounts"), t("public", "order lines")]
    );
    assert_eq!(
        toc.table_data,
        [t("public", "accounts"), t("public", "order lines")]
    );
}

#[test]
fn backups_are_matched_to_the_longest_database_name() {
    let dbs: Vec<String> = ["users", "link_users", "link_ai"]
        .map(String::from)
        .to_vec();
    let of = |k: &str| database_of(k, &dbs);
    assert_eq!(
        of("postgres-backups/postgres-backup-latest_link_users.sql.enc"),
        Some("link_users")
    );
    assert_eq!(
        of("postgres-backups/manual/manual-backup-20261125_010203-link_ai.sql.enc"),
        Some("link_ai")
    );
    assert_eq!(of("postgres-backups/users/2026-11-25.dump.enc"), None);
    assert_eq!(of("postgres-backups/users/users.dump.enc"), Some("users"));
    assert_eq!(of("postgres-backups/link_ai_archive.sql.enc"), None);
    assert_eq!(of("postgres-backups/superusers.sql.enc"), None);
}

#[test]
fn a_directory_named_like_a_database_does_not_make_its_files_that_databases() {
    // The prefix `postgres/` with the databases `postgres` and `app`.
    let dbs: Vec<String> = ["postgres", "app"].map(String::from).to_vec();
    let of = |k: &str| database_of(k, &dbs);
    assert_eq!(
        of("postgres/postgres-backup-20261130_020000_app.sql.enc"),
        Some("app")
    );
    assert_eq!(
        of("postgres/postgres-backup-20261130_020000_postgres.sql.enc"),
        Some("postgres")
    );
    assert_eq!(of("postgres/postgres-backup-20261130_020000.sql.enc"), None);
}

#[test]
fn scratch_names_are_safe_identifiers_of_at_most_63_bytes() {
    let n = scratch_name("br_restore", "Link-Users \"x\"; DROP");
    assert!(n.starts_with("br_restore_link_users__x___drop_"), "{n}");
    assert!(n
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
    assert!(scratch_name("br_restore", &"x".repeat(200)).len() <= 63);
    assert_ne!(scratch_name("p", "d"), scratch_name("p", "d"));
}

#[test]
fn the_incident_fingerprint_is_stable_per_database() {
    let a = incident_fingerprint("link_users");
    assert_eq!(a.len(), 16);
    assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(a, incident_fingerprint("link_users"));
    assert_ne!(a, incident_fingerprint("link_chat"));
}

#[test]
fn the_target_url_is_parsed_and_never_shown() {
    let url = SecretString::from(
        "postgres://restorer:s%40cret-canary@db.example:6432/maint?sslmode=require",
    );
    let t = PgTarget::parse(&url).unwrap();
    assert_eq!(
        (t.host.as_str(), t.port, t.user.as_str()),
        ("db.example", 6432, "restorer")
    );
    assert_eq!(t.maintenance_db, "maint");
    assert_eq!(t.sslmode.as_deref(), Some("require"));
    assert_eq!(
        t.password.as_ref().unwrap().expose_secret(),
        "s@cret-canary"
    );
    assert!(!format!("{t:?}").contains("canary"));
    let err = PgTarget::parse(&SecretString::from("mysql://u:canary@h/db"))
        .unwrap_err()
        .to_string();
    assert!(!err.contains("canary"), "{err}");
}
