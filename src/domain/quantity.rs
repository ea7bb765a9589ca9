//! Kubernetes resource quantities for storage ("100Gi", "500G", "1.5Ti"): parsed to bytes and
//! written back in the binary unit a person would use.

/// Bytes in `q`, or `None` if it is not a plain storage quantity.
pub fn parse(q: &str) -> Option<u128> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, unit) = q.split_at(split);
    let factor: u128 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        _ => return None,
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut bytes = whole.checked_mul(factor)?;
    if !frac.is_empty() {
        let digits: u32 = frac.len().try_into().ok().filter(|d| *d <= 18)?;
        let frac: u128 = frac.parse().ok()?;
        bytes = bytes.checked_add(frac * factor / 10u128.pow(digits))?;
    }
    Some(bytes)
}

/// `bytes` in the largest binary unit that divides it exactly ("150Gi"); plain bytes otherwise.
pub fn format(bytes: u128) -> String {
    for (unit, factor) in [
        ("Pi", 1u128 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes >= factor && bytes % factor == 0 {
            return format!("{}{unit}", bytes / factor);
        }
    }
    bytes.to_string()
}

/// `bytes` to one decimal in the largest binary unit it reaches ("1.5 GiB", "512 B"): for
/// measured sizes, which are never round.
pub fn approx(bytes: u64) -> String {
    let mut v = bytes as f64;
    for unit in ["B", "KiB", "MiB", "GiB", "TiB"] {
        if v < 1024.0 || unit == "TiB" {
            return if unit == "B" {
                format!("{bytes} B")
            } else {
                format!("{v:.1} {unit}")
            };
        }
        v /= 1024.0;
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_and_decimal_units() {
        assert_eq!(parse("100Gi"), Some(100 << 30));
        assert_eq!(parse("1.5Ti"), Some(3 << 39));
        assert_eq!(parse("500G"), Some(500_000_000_000));
        assert_eq!(parse("1024"), Some(1024));
        assert_eq!(parse("lots"), None);
        assert_eq!(parse("10Gb"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn formats_in_the_largest_exact_unit() {
        assert_eq!(format(150 << 30), "150Gi");
        assert_eq!(format(3 << 39), "1536Gi");
        assert_eq!(format(1 << 40), "1Ti");
        assert_eq!(format(1000), "1000");
    }

    proptest::proptest! {
        #[test]
        fn formatting_then_parsing_gives_the_same_bytes(gib in 1u128..100_000) {
            proptest::prop_assert_eq!(parse(&format(gib << 30)), Some(gib << 30));
        }
    }
}
