//! Version drift seen by the restore test: an archive written by a `pg_dump` newer than the
//! `pg_restore` this service runs. pg_restore refuses it with `unsupported version (X.Y) in file
//! header`; the backup may well be sound, so this is a test that could not run (nothing said
//! against the backup), with the change that makes it run.

/// The archive format pg_restore refused, from its stderr: `unsupported version (1.16) in file
/// header` → `1.16`.
fn refused_format(stderr: &str) -> Option<&str> {
    let (_, rest) = stderr.split_once("unsupported version (")?;
    let (format, tail) = rest.split_once(')')?;
    let plausible = !format.is_empty() && format.chars().all(|c| c.is_ascii_digit() || c == '.');
    (plausible && tail.trim_start().starts_with("in file header")).then_some(format)
}

/// The reason to record when `program` refused the archive for its format version.
pub(super) fn archive_newer_than_pg_restore(stderr: &str, program: &str) -> Option<String> {
    refused_format(stderr).map(|format| {
        format!(
            "version drift: the archive is in pg_dump's format {format}, which this service's \
             {program} cannot read: the backups are made by a newer pg_dump than the pg_restore \
             in this image. Rebuild the image with --build-arg PG_MAJOR=<the backup job's pg_dump \
             major or newer> (the `versions` probe names it); the backup itself was not judged"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_restore_refusing_a_newer_format_is_recognised_and_nothing_else_is() {
        let real = "pg_restore: error: unsupported version (1.16) in file header\n";
        assert_eq!(refused_format(real), Some("1.16"));
        let reason = archive_newer_than_pg_restore(real, "pg_restore").unwrap();
        assert!(
            reason.contains("format 1.16") && reason.contains("PG_MAJOR"),
            "{reason}"
        );
        for other in [
            "pg_restore: error: could not read from input file: end of file",
            "pg_restore: error: input file does not appear to be a valid archive",
            "unsupported version (x; drop table) in file header",
            "unsupported version (1.16) somewhere else",
        ] {
            assert_eq!(refused_format(other), None, "{other}");
        }
    }
}
