//! Values people write in configuration files: durations ("90d", "8h", "13w") and sizes
//! ("2GiB", "500 MB").

use crate::units::{ValueError, ValueKind};

/// A duration such as `60s`, `8h`, `90d` or `13w`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, ValueError> {
    humantime::parse_duration(text.trim()).map_err(|e| ValueError {
        detail: Some(e.to_string()),
        ..ValueError::new(ValueKind::Duration, text)
    })
}

/// A size such as `2GiB`, `500MB`, `750 KiB` or a plain number of bytes.
pub fn parse_size(text: &str) -> Result<u64, ValueError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let err = || ValueError::new(ValueKind::Size, text);
    let n: f64 = number.parse().map_err(|_| err())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" | "k" => 1024.0,
        "mib" | "m" => 1024.0 * 1024.0,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        "tib" | "t" => 1024.0f64.powi(4),
        _ => return Err(err()),
    };
    Ok((n * mult).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse_as_people_write_them() {
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("500 MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
        assert_eq!(parse_size("42").unwrap(), 42);
        assert_eq!(
            parse_size("lots").unwrap_err().to_string(),
            r#""lots" is not a size: write it like "2GiB", "500MB" or "750KiB""#
        );
        assert_eq!(parse_duration("8h").unwrap().as_secs(), 8 * 3600);
        assert_eq!(parse_duration("13w").unwrap().as_secs(), 13 * 7 * 86400);
        let e = parse_duration("soon").unwrap_err();
        assert_eq!((e.kind, e.text.as_str()), (ValueKind::Duration, "soon"));
        assert!(e.to_string().contains(r#""90d""#), "{e}");
    }
}
