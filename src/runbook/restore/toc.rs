//! The archive's table of contents, as `pg_restore --list` prints it.

use super::quote_ident;
use serde::Serialize;

/// One table named in `pg_restore --list`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct TableRef {
    pub schema: String,
    pub name: String,
}

impl TableRef {
    pub(super) fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

/// What the archive announces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Toc {
    /// TABLE entries.
    pub tables: Vec<TableRef>,
    /// TABLE DATA entries.
    pub table_data: Vec<TableRef>,
    /// Entries of any kind.
    pub entries: usize,
}

/// Parses `pg_restore --list` output: `ID; TABLEOID OID DESC SCHEMA NAME OWNER` per entry,
/// where DESC may be two words (`TABLE DATA`) and comments start with `;`.
pub fn parse_toc(listing: &str) -> Toc {
    let mut toc = Toc::default();
    for line in listing.lines() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with(';') {
            continue;
        }
        let Some((_, rest)) = line.split_once("; ") else {
            continue;
        };
        toc.entries += 1;
        // Skip the table and object OIDs.
        let mut fields = rest.splitn(3, ' ');
        let (Some(_), Some(_), Some(rest)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let (is_data, rest) = if let Some(r) = rest.strip_prefix("TABLE DATA ") {
            (true, r)
        } else if let Some(r) = rest.strip_prefix("TABLE ") {
            (false, r)
        } else {
            continue;
        };
        let words: Vec<&str> = rest.split(' ').collect();
        let table = match words.as_slice() {
            [schema, name] => TableRef {
                schema: (*schema).to_owned(),
                name: (*name).to_owned(),
            },
            // The owner is last; a name with spaces sits between schema and owner.
            [schema, middle @ .., _owner] if !middle.is_empty() => TableRef {
                schema: (*schema).to_owned(),
                name: middle.join(" "),
            },
            _ => continue,
        };
        if is_data {
            toc.table_data.push(table);
        } else {
            toc.tables.push(table);
        }
    }
    toc
}
