//! Kubernetes quantities ("500m", "1.5Gi", "2e3", "64Mi") as integers: what the scheduler
//! counts in, and what a plugin manifest's `memoryLimit` says. Text in, numbers out; it
//! knows nothing of objects.

/// `text` × `scale`, rounded up (a quantity is never less than it says); None if it is
/// not a quantity or is negative or too large.
fn scaled(text: &str, scale: i128) -> Option<u64> {
    let text = text.trim();
    let end = text.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(end);
    let number = number.strip_prefix('+').unwrap_or(number);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    if digits.len() > 30 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mantissa: i128 = digits.parse().ok()?;
    // value = mantissa × 2^binary × 10^decimal / 10^len(fraction)
    let (binary, mut decimal): (u32, i32) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        exponent if exponent.starts_with(['e', 'E']) => (0, exponent[1..].parse().ok()?),
        _ => return None,
    };
    decimal -= fraction.len() as i32;
    let mut numerator = mantissa.checked_mul(scale)?.checked_mul(1i128.checked_shl(binary)?)?;
    let mut denominator: i128 = 1;
    if decimal >= 0 {
        numerator = numerator.checked_mul(10i128.checked_pow(decimal as u32)?)?;
    } else {
        denominator = 10i128.checked_pow(decimal.unsigned_abs())?;
    }
    let value = (numerator + denominator - 1) / denominator;
    u64::try_from(value).ok()
}

/// A quantity in thousandths (cpu in millicores).
pub fn milli(text: &str) -> Option<u64> {
    scaled(text, 1000)
}

/// A quantity as a whole number (bytes, counts), rounded up.
pub fn whole(text: &str) -> Option<u64> {
    scaled(text, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_as_kubernetes_writes_them() {
        assert_eq!(milli("500m"), Some(500));
        assert_eq!(milli("2"), Some(2000));
        assert_eq!(milli("0.1"), Some(100));
        assert_eq!(milli("1.5"), Some(1500));
        assert_eq!(milli("100u"), Some(1), "rounded up");
        assert_eq!(whole("1Gi"), Some(1 << 30));
        assert_eq!(whole("1.5Gi"), Some(3 << 29));
        assert_eq!(whole("128974848"), Some(128_974_848));
        assert_eq!(whole("129e6"), Some(129_000_000));
        assert_eq!(whole("123M"), Some(123_000_000));
        assert_eq!(whole("1k"), Some(1000));
        for bad in ["", "abc", "1Xi", "-1", "1.2.3", "."] {
            assert_eq!(whole(bad), None, "{bad:?}");
        }
    }
}
