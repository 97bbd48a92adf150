//! Byte sizes with units, as typed on the command line or sent in RPC parameters (`64MiB`,
//! `4k`, `1.5G`, `100MB`) and as shown in tables (`64 MiB`). plexctl and the daemon share it, so
//! a size means the same on both sides.
//!
//! Units are case-insensitive. The single letters and the IEC names are powers of 1024
//! (`K` = `KiB` = 1024, `M` = `MiB`, `G` = `GiB`, `T` = `TiB`, `P` = `PiB`); the SI names with a
//! `B` are powers of 1000 (`KB` = 1000, `MB`, `GB`, `TB`, `PB`), as on a disk's label. A bare
//! number or a `B` suffix is bytes. A decimal fraction is accepted when the result is a whole
//! number of bytes (`1.5K` = 1536, `0.5B` is an error).

/// Why a size could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Nothing was given.
    #[error("empty size")]
    Empty,
    /// The part before the unit is not a number.
    #[error("invalid size '{0}': expected a number with an optional unit, e.g. 64MiB")]
    Number(String),
    /// The unit is not one we know.
    #[error(
        "invalid size '{0}': unknown unit (use B, K/KiB, M/MiB, G/GiB, T/TiB, or KB/MB/GB/TB)"
    )]
    Unit(String),
    /// The value does not fit in 64 bits.
    #[error("size '{0}' is too large")]
    Overflow(String),
    /// The value is not a whole number of bytes.
    #[error("size '{0}' is not a whole number of bytes")]
    Fraction(String),
}

/// The multiplier for a unit suffix (already trimmed), or `None` if it is not a unit.
fn unit_multiplier(unit: &str) -> Option<u64> {
    const KI: u64 = 1 << 10;
    let m = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => KI,
        "m" | "mi" | "mib" => KI.pow(2),
        "g" | "gi" | "gib" => KI.pow(3),
        "t" | "ti" | "tib" => KI.pow(4),
        "p" | "pi" | "pib" => KI.pow(5),
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "pb" => 1_000_000_000_000_000,
        _ => return None,
    };
    Some(m)
}

/// Parses a size such as `4096`, `64MiB`, `4k`, `1.5 GiB` or `100MB` into bytes.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(SizeError::Empty);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    if number.is_empty() {
        return Err(SizeError::Number(s.to_string()));
    }
    let multiplier = unit_multiplier(unit.trim()).ok_or_else(|| SizeError::Unit(s.to_string()))?;

    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    let digits_ok = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty() || !digits_ok(int_part) || !digits_ok(frac_part) {
        return Err(SizeError::Number(s.to_string()));
    }
    if number.ends_with('.') {
        return Err(SizeError::Number(s.to_string()));
    }
    // Trailing zeros after the point change nothing: "1.50" is "1.5".
    let frac_part = frac_part.trim_end_matches('0');

    let overflow = || SizeError::Overflow(s.to_string());
    // value = (int_part.frac_part) * multiplier, computed exactly as
    // (int_part * 10^f + frac_part) * multiplier / 10^f in 128-bit arithmetic.
    let frac_digits = u32::try_from(frac_part.len()).map_err(|_| overflow())?;
    let scale = 10u128.checked_pow(frac_digits).ok_or_else(overflow)?;
    let int_value: u128 = int_part.parse().map_err(|_| overflow())?;
    let frac_value: u128 = if frac_part.is_empty() {
        0
    } else {
        frac_part.parse().map_err(|_| overflow())?
    };
    let scaled = int_value
        .checked_mul(scale)
        .and_then(|v| v.checked_add(frac_value))
        .and_then(|v| v.checked_mul(u128::from(multiplier)))
        .ok_or_else(overflow)?;
    if scaled % scale != 0 {
        return Err(SizeError::Fraction(s.to_string()));
    }
    u64::try_from(scaled / scale).map_err(|_| overflow())
}

/// Formats a byte count for people: exact binary units where they fit (`64 MiB`), otherwise one
/// decimal place (`1.5 GiB`); below 1 KiB, plain bytes (`512 B`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut unit = 0;
    let mut div: u64 = 1024;
    while unit + 1 < UNITS.len() && bytes / div >= 1024 {
        div *= 1024;
        unit += 1;
    }
    if bytes.checked_rem(div) == Some(0) {
        format!("{} {}", bytes / div, UNITS[unit])
    } else {
        // Precision loss in the cast is irrelevant at one decimal place.
        format!("{:.1} {}", bytes as f64 / div as f64, UNITS[unit])
    }
}

/// Formats a rate in bytes per second with one decimal (`12.3 MiB/s`); below 1 KiB/s, whole
/// bytes (`512 B/s`).
pub fn format_rate(bytes_per_sec: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes_per_sec < 1024 {
        return format!("{bytes_per_sec} B/s");
    }
    let mut unit = 0;
    let mut value = bytes_per_sec as f64 / 1024.0;
    while unit + 1 < UNITS.len() && value >= 1024.0 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}/s", UNITS[unit])
}

/// clap value parser wrapper for [`parse_size`].
pub fn size_arg(text: &str) -> Result<u64, String> {
    parse_size(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bytes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size(" 512 "), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("512 b"), Ok(512));
    }

    #[test]
    fn binary_units() {
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("4kib"), Ok(4096));
        assert_eq!(parse_size("4Ki"), Ok(4096));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64 mib"), Ok(64 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("1tib"), Ok(1 << 40));
        assert_eq!(parse_size("1P"), Ok(1 << 50));
    }

    #[test]
    fn decimal_units() {
        assert_eq!(parse_size("1KB"), Ok(1000));
        assert_eq!(parse_size("1kB"), Ok(1000));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("3GB"), Ok(3_000_000_000));
        assert_eq!(parse_size("2TB"), Ok(2_000_000_000_000));
    }

    #[test]
    fn fractions() {
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("0.5MB"), Ok(500_000));
        assert_eq!(parse_size("2.0"), Ok(2));
        assert_eq!(parse_size("0.5"), Err(SizeError::Fraction("0.5".into())));
        assert_eq!(
            parse_size("1.0001K"),
            Err(SizeError::Fraction("1.0001K".into()))
        );
    }

    #[test]
    fn garbage() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert_eq!(parse_size("   "), Err(SizeError::Empty));
        assert_eq!(parse_size("MiB"), Err(SizeError::Number("MiB".into())));
        assert_eq!(parse_size("-1"), Err(SizeError::Number("-1".into())));
        assert_eq!(parse_size("+1"), Err(SizeError::Number("+1".into())));
        assert_eq!(parse_size(".5K"), Err(SizeError::Number(".5K".into())));
        assert_eq!(parse_size("5.K"), Err(SizeError::Number("5.K".into())));
        assert_eq!(parse_size("1.2.3"), Err(SizeError::Number("1.2.3".into())));
        assert_eq!(parse_size("12X"), Err(SizeError::Unit("12X".into())));
        assert_eq!(
            parse_size("12 MiBs"),
            Err(SizeError::Unit("12 MiBs".into()))
        );
        assert_eq!(parse_size("1M2"), Err(SizeError::Unit("1M2".into())));
        assert_eq!(parse_size("1e6"), Err(SizeError::Unit("1e6".into())));
        assert_eq!(parse_size("٣K"), Err(SizeError::Number("٣K".into())));
    }

    #[test]
    fn overflow() {
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            parse_size("18446744073709551616"),
            Err(SizeError::Overflow("18446744073709551616".into()))
        );
        assert_eq!(parse_size("16EiB").ok(), None);
        assert_eq!(
            parse_size("16384P"),
            Err(SizeError::Overflow("16384P".into()))
        );
        assert_eq!(parse_size("16383P"), Ok(16383 << 50));
        let huge = "9".repeat(60);
        assert_eq!(parse_size(&huge), Err(SizeError::Overflow(huge.clone())));
        assert_eq!(parse_size(&format!("1.{}K", "0".repeat(60))), Ok(1024));
        let long_fraction = format!("1.{}1", "0".repeat(60));
        assert_eq!(
            parse_size(&long_fraction),
            Err(SizeError::Overflow(long_fraction.clone()))
        );
    }

    #[test]
    fn error_messages_are_actionable() {
        assert!(size_arg("12X").unwrap_err().contains("unknown unit"));
        assert!(size_arg("99999999999999999999")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn formatting() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(1024), "1 KiB");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(64 << 20), "64 MiB");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
        assert_eq!(format_size(1 << 40), "1 TiB");
        assert_eq!(format_size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn rates() {
        assert_eq!(format_rate(0), "0 B/s");
        assert_eq!(format_rate(1023), "1023 B/s");
        assert_eq!(format_rate(1024), "1.0 KiB/s");
        assert_eq!(format_rate(12_897_485), "12.3 MiB/s");
        assert_eq!(format_rate(3 << 29), "1.5 GiB/s");
        assert_eq!(format_rate(u64::MAX), "16.0 EiB/s");
    }
}
