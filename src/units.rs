//! How quantities are written for people, and read back from what they write: sizes in
//! binary units, and the error for a value that is not of its kind. A leaf module, so that the
//! library's reports and the command line say sizes the same way, and every parser of a typed
//! value (durations, sizes, keep counts, spans) fails with the same kind of error.

/// The kinds of value people write in vouch.toml and on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// `60s`, `8h`, `90d`, `13w`.
    Duration,
    /// `2GiB`, `500MB`, `750KiB`.
    Size,
    /// A keep rule's count: a whole number, or `unlimited`.
    Count,
    /// A span of calendar time as restic writes it: `90d`, `6m`, `1y2m3d4h`.
    Span,
}

impl ValueKind {
    fn name(self) -> &'static str {
        match self {
            ValueKind::Duration => "a duration",
            ValueKind::Size => "a size",
            ValueKind::Count => "a count",
            ValueKind::Span => "a span",
        }
    }

    /// How to write one, as the fix in an error.
    pub fn example(self) -> &'static str {
        match self {
            ValueKind::Duration => r#"write it like "60s", "8h", "90d" or "13w""#,
            ValueKind::Size => r#"write it like "2GiB", "500MB" or "750KiB""#,
            ValueKind::Count => r#"give a whole number, or "unlimited""#,
            ValueKind::Span => "write it like 90d, 6m, 1y or 1y2m3d4h (years, months, days, hours)",
        }
    }
}

/// A value that is not of its kind: names the text, the kind, what the parser saw wrong (when
/// it says), and how to write one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not {}{}: {}", kind.name(), detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default(), kind.example())]
pub struct ValueError {
    pub text: String,
    pub kind: ValueKind,
    pub detail: Option<String>,
}

impl ValueError {
    pub fn new(kind: ValueKind, text: &str) -> ValueError {
        ValueError {
            text: text.to_string(),
            kind,
            detail: None,
        }
    }
}

/// A size in bytes, as `1.5 MiB`.
pub fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_are_written_in_binary_units() {
        assert_eq!(super::size(0), "0 B");
        assert_eq!(super::size(1023), "1023 B");
        assert_eq!(super::size(1536), "1.5 KiB");
        assert_eq!(super::size(5 << 30), "5.0 GiB");
    }
}
