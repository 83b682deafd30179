//! Kubernetes resource quantities (`10Gi`, `256Mi`, `1G`, `1.5Gi`, `1e3`), limited
//! to what storage sizes need: non-negative values rounded up to whole bytes.

/// Parses a quantity into bytes, rounding fractions up. `None` when malformed.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    // Decimal exponent form: 1e3, 2E6.
    let (num, multiplier): (&str, f64) = match suffix {
        "" => (num, 1.0),
        "Ki" => (num, 1024.0),
        "Mi" => (num, 1024f64.powi(2)),
        "Gi" => (num, 1024f64.powi(3)),
        "Ti" => (num, 1024f64.powi(4)),
        "Pi" => (num, 1024f64.powi(5)),
        "Ei" => (num, 1024f64.powi(6)),
        "m" => (num, 0.001),
        "k" => (num, 1e3),
        "M" => (num, 1e6),
        "G" => (num, 1e9),
        "T" => (num, 1e12),
        "P" => (num, 1e15),
        "E" => (num, 1e18),
        other => {
            let exp = other.strip_prefix('e').or_else(|| other.strip_prefix('E'))?;
            let exp: i32 = exp.parse().ok()?;
            (num, 10f64.powi(exp))
        }
    };
    if num.is_empty() || num.starts_with('-') {
        return None;
    }
    let num = num.strip_prefix('+').unwrap_or(num);
    if num.matches('.').count() > 1 || num == "." {
        return None;
    }
    // 2^64: the first value a u64 cannot hold. `as u64` would saturate to
    // u64::MAX instead of failing, so both paths compare against it first.
    const U64_LIMIT: f64 = 18_446_744_073_709_551_616.0;
    // Whole numbers go through integer arithmetic so large sizes stay exact.
    if !num.contains('.') && (1.0..U64_LIMIT).contains(&multiplier) && multiplier.fract() == 0.0 {
        let n: u64 = num.parse().ok()?;
        return n.checked_mul(multiplier as u64);
    }
    let value: f64 = num.parse().ok()?;
    let bytes = (value * multiplier).ceil();
    if !bytes.is_finite() || !(0.0..U64_LIMIT).contains(&bytes) {
        return None;
    }
    Some(bytes as u64)
}

/// Canonical binary form: the largest power-of-1024 suffix that divides evenly.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 5] =
        [("Pi", 1 << 50), ("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)];
    for (suffix, size) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{}", bytes / size, suffix);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("10Gi", Some(10 << 30))]
    #[case("256Mi", Some(256 << 20))]
    #[case("1G", Some(1_000_000_000))]
    #[case("1.5Gi", Some(3 << 29))]
    #[case("1e3", Some(1000))]
    #[case("100", Some(100))]
    #[case("1500m", Some(2))]
    #[case("", None)]
    #[case("-1Gi", None)]
    #[case("10Qi", None)]
    #[case("1..2", None)]
    #[case("Gi", None)]
    // Found by fuzzing (sim_request): exponents past u64 saturated to u64::MAX.
    #[case("1e20", None)]
    #[case("2e19", None)]
    #[case("1e19", Some(10_000_000_000_000_000_000))]
    #[case("0e20", Some(0))]
    #[case("16Ei", None)]
    #[case("18446744073709551616", None)]
    fn parses(#[case] input: &str, #[case] want: Option<u64>) {
        assert_eq!(parse_bytes(input), want);
    }

    #[rstest]
    #[case(10 << 30, "10Gi")]
    #[case(12 << 20, "12Mi")]
    #[case(1000, "1000")]
    #[case(0, "0")]
    fn formats(#[case] bytes: u64, #[case] want: &str) {
        assert_eq!(format_bytes(bytes), want);
    }
}
