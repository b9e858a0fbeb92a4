//! Numbers as the old awk report read and printed them: awk's string-to-number rule and C
//! printf's `%.Nf`, `%d` and `%.6g`, so the report keeps its exact bytes.

/// awk's string-to-number rule: the longest leading decimal number (after blanks), else 0.
/// `"12abc"` is 12, `""` and `"abc"` are 0.
pub fn awk_num(s: &str) -> f64 {
    let s = s.trim_start_matches([' ', '\t', '\n']);
    let b = s.as_bytes();
    let mut end = 0;
    if end < b.len() && (b[end] == b'+' || b[end] == b'-') {
        end += 1;
    }
    let digits_start = end;
    while end < b.len() && b[end].is_ascii_digit() {
        end += 1;
    }
    let mut mantissa_digits = end - digits_start;
    if end < b.len() && b[end] == b'.' {
        let frac_start = end + 1;
        let mut frac_end = frac_start;
        while frac_end < b.len() && b[frac_end].is_ascii_digit() {
            frac_end += 1;
        }
        mantissa_digits += frac_end - frac_start;
        if mantissa_digits > 0 {
            end = frac_end;
        }
    }
    if mantissa_digits == 0 {
        return 0.0;
    }
    if end < b.len() && (b[end] == b'e' || b[end] == b'E') {
        let mut exp_end = end + 1;
        if exp_end < b.len() && (b[exp_end] == b'+' || b[exp_end] == b'-') {
            exp_end += 1;
        }
        let exp_digits = exp_end;
        while exp_end < b.len() && b[exp_end].is_ascii_digit() {
            exp_end += 1;
        }
        if exp_end > exp_digits {
            end = exp_end;
        }
    }
    s[..end].parse().unwrap_or(0.0)
}

/// C's `%.{prec}f`: the exact decimal value rounded half to even, as glibc prints it.
/// NaN prints as glibc does on x86, where 0/0 gives a negative NaN.
pub fn fixed(x: f64, prec: usize) -> String {
    if x.is_nan() {
        return if x.is_sign_negative() { "-nan" } else { "nan" }.to_string();
    }
    format!("{x:.prec$}")
}

/// C's `%d` of a double, as awk's printf does it: the integer part, truncated toward zero.
pub fn int(x: f64) -> String {
    // Truncation is the point: awk converts the double to a C integer.
    #[allow(clippy::cast_possible_truncation)]
    let i = x.trunc() as i64;
    i.to_string()
}

/// C's `%.6g`, awk's output format for a number it prints without a format (`print q / p`).
pub fn g6(x: f64) -> String {
    const PREC: i32 = 6;
    if x == 0.0 {
        return "0".to_string();
    }
    // The exponent after rounding to PREC significant digits decides the style.
    let sci = format!("{:.*e}", (PREC - 1) as usize, x);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..PREC).contains(&exp) {
        let mantissa = strip_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        let decimals = usize::try_from(PREC - 1 - exp).unwrap_or(0);
        strip_zeros(&fixed(x, decimals)).to_string()
    }
}

fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// printf's `%-{width}s`: pads with spaces to `width` bytes (not characters: the old script's
/// `printf` counted bytes, so "×" takes two columns).
pub fn left(s: &str, width: usize) -> String {
    format!("{s}{}", " ".repeat(width.saturating_sub(s.len())))
}

/// printf's `%{width}s`, in bytes as `left`.
pub fn right(s: &str, width: usize) -> String {
    format!("{}{s}", " ".repeat(width.saturating_sub(s.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awk_num_takes_the_leading_number() {
        assert_eq!(awk_num("190066"), 190_066.0);
        assert_eq!(awk_num("0.3"), 0.3);
        assert_eq!(awk_num(" 12abc"), 12.0);
        assert_eq!(awk_num("-5"), -5.0);
        assert_eq!(awk_num("1e3x"), 1000.0);
        assert_eq!(awk_num("1e"), 1.0);
        assert_eq!(awk_num("."), 0.0);
        assert_eq!(awk_num(""), 0.0);
        assert_eq!(awk_num("abc"), 0.0);
    }

    #[test]
    fn fixed_rounds_exact_ties_to_even_like_glibc() {
        // Outputs of glibc's printf for the same values.
        assert_eq!(fixed(248.5, 0), "248");
        assert_eq!(fixed(249.5, 0), "250");
        assert_eq!(fixed(0.125, 2), "0.12");
        assert_eq!(fixed(0.875, 2), "0.88");
        assert_eq!(fixed(1.005, 2), "1.00"); // 1.00499999999999989...
        assert_eq!(fixed(0.25, 1), "0.2");
        assert_eq!(fixed(-0.2, 0), "-0");
        assert_eq!(fixed(f64::INFINITY, 1), "inf");
        assert_eq!(fixed(-f64::NAN, 1), "-nan");
    }

    #[test]
    fn int_truncates_toward_zero() {
        assert_eq!(int(27.999), "27");
        assert_eq!(int(-0.7), "0");
        assert_eq!(int(140_597.0), "140597");
    }

    #[test]
    fn g6_is_c_percent_g() {
        assert_eq!(g6(0.5), "0.5");
        assert_eq!(g6(1.0), "1");
        assert_eq!(g6(0.25), "0.25");
        assert_eq!(g6(1.0 / 3.0), "0.333333");
        assert_eq!(g6(1_234_567.0), "1.23457e+06");
        assert_eq!(g6(999_999.5), "1e+06");
        assert_eq!(g6(0.000_012_5), "1.25e-05");
        assert_eq!(g6(0.0), "0");
    }

    #[test]
    fn padding_counts_bytes() {
        assert_eq!(left("ab", 4), "ab  ");
        assert_eq!(right("ab", 4), "  ab");
        assert_eq!(left("1.1 ×", 7), "1.1 × "); // "×" is two bytes
        assert_eq!(right("toolong", 3), "toolong");
    }
}
