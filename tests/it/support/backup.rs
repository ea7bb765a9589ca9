//! Backups as the runbook's job makes them: `pg_dump -Fc`, then the real `openssl enc`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A real backup of the local `postgres` database (as the superuser), encrypted with `key`.
pub fn real_backup(dir: &Path, key: &str) -> Vec<u8> {
    openssl_encrypt(
        &pg_dump(dir, "postgres", "postgres", "link_users", true),
        key,
    )
}

/// `pg_dump -Fc` of `db` as `role` (it must exist and read everything, without a password),
/// encrypted with `key`.
pub fn dump_as(dir: &Path, role: &str, db: &str, key: &str) -> Vec<u8> {
    openssl_encrypt(&pg_dump(dir, role, db, db, false), key)
}

/// `pg_dump -Fc` of `db` as `role` logging in with `password` (as the backup Job does with the
/// Secret's), encrypted with `key`.
pub fn dump_with_password(dir: &Path, role: &str, password: &str, db: &str, key: &str) -> Vec<u8> {
    let dump = dir.join(format!("{db}-{}.dump", uuid::Uuid::new_v4().simple()));
    let out = Command::new("pg_dump")
        .args(["-Fc", "-h", "127.0.0.1", "-U", role, "-f"])
        .arg(&dump)
        .arg(db)
        .env("PGPASSWORD", password)
        .output()
        .expect("pg_dump is installed (scripts/test.sh installs PostgreSQL)");
    assert!(
        out.status.success(),
        "pg_dump of {db} as {role} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    openssl_encrypt(&dump, key)
}

/// `pg_dump -Fc` of `db` as `user` into `dir/<name>.dump`; `PGPASSWORD` is passed on only
/// `with_password`.
fn pg_dump(dir: &Path, user: &str, db: &str, name: &str, with_password: bool) -> PathBuf {
    let dump = dir.join(format!("{name}.dump"));
    let mut cmd = Command::new("pg_dump");
    cmd.args(["-Fc", "-h", "127.0.0.1", "-U", user, "-f"])
        .arg(&dump)
        .arg(db);
    if !with_password {
        cmd.env_remove("PGPASSWORD");
    }
    let out = cmd
        .output()
        .expect("pg_dump is installed (scripts/test.sh installs PostgreSQL)");
    assert!(
        out.status.success(),
        "pg_dump of {db} as {user} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dump
}

/// `plain` encrypted by the real openssl exactly as the runbook's job does it
/// (`openssl enc -aes-256-cbc -salt -pbkdf2 -iter 100000 -k KEY`); the encrypted bytes.
pub fn openssl_encrypt(plain: &Path, key: &str) -> Vec<u8> {
    let enc = plain.with_extension(format!("{}.enc", uuid::Uuid::new_v4().simple()));
    let out = Command::new("openssl")
        .args([
            "enc",
            "-aes-256-cbc",
            "-salt",
            "-pbkdf2",
            "-iter",
            "100000",
            "-in",
        ])
        .arg(plain)
        .arg("-out")
        .arg(&enc)
        .args(["-k", key])
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl enc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(enc).unwrap()
}
