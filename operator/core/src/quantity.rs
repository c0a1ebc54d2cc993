//! Kubernetes resource quantities (`100m`, `256Mi`, `1`, `5Gi`, `1e3`), parsed for validation
//! and comparison only; the text the user wrote is what is applied.

/// The value of a quantity, or `None` if it is not a valid quantity.
pub fn parse(text: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 14] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    let text = text.trim();
    if text.is_empty() || text.len() > 64 {
        return None;
    }
    let (number, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| text.strip_suffix(suffix).map(|n| (n, *factor)))
        .or_else(|| text.strip_suffix('E').map(|n| (n, 1e18)))
        .unwrap_or((text, 1.0));
    let plain = number.strip_prefix('+').unwrap_or(number);
    // Digits with at most one '.', optionally an exponent (e.g. `1e3`); no sign but '+'.
    let (mantissa, exponent) = match plain.split_once(['e', 'E']) {
        Some((m, e)) if factor == 1.0 => (m, Some(e)),
        _ => (plain, None),
    };
    let digits_ok = !mantissa.is_empty()
        && mantissa.chars().all(|c| c.is_ascii_digit() || c == '.')
        && mantissa.chars().filter(|c| *c == '.').count() <= 1
        && mantissa.chars().any(|c| c.is_ascii_digit());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.len() <= 3 && e.chars().all(|c| c.is_ascii_digit())
    });
    if !digits_ok || !exponent_ok {
        return None;
    }
    plain
        .parse::<f64>()
        .ok()
        .map(|v| v * factor)
        .filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_kubernetes_quantities() {
        assert_eq!(parse("100m"), Some(0.1));
        assert_eq!(parse("1"), Some(1.0));
        assert_eq!(parse("256Mi"), Some(268_435_456.0));
        assert_eq!(parse("5Gi"), Some(5.0 * 1_073_741_824.0));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse("1.5"), Some(1.5));
        assert_eq!(parse("2k"), Some(2000.0));
    }

    #[test]
    fn rejects_what_kubernetes_rejects() {
        for bad in ["", "-1", "1Gb", "abc", "1..2", "Mi", "1 Gi", "1e", "١"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
