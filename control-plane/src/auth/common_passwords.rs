//! Rejects the most common passwords: a case-insensitive lookup in a bundled list.
//!
//! `common_passwords.txt` comes from Django 5.2.19 (`django/contrib/auth/common-passwords.txt.gz`,
//! from the `Django` package on PyPI), BSD-3-Clause licensed, © Django Software Foundation and
//! individual contributors. Django's list holds the 20,000 most common passwords, lowercased,
//! compiled by Royce Williams (https://gist.github.com/roycewilliams/226886fd01572964e1431ac8afc999ce).
//! Kept here: the entries of 8 to 128 characters (shorter ones are refused by length anyway),
//! most common first, as plain text; 8 mis-decoded non-ASCII entries were dropped.
use std::{collections::HashSet, sync::LazyLock};

static LIST: &str = include_str!("common_passwords.txt");

static COMMON: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| LIST.lines().map(str::trim).filter(|l| !l.is_empty()).collect());

/// True when `password`, lowercased and with surrounding whitespace trimmed (as Django
/// compares), is one of the bundled common passwords.
pub fn is_common(password: &str) -> bool {
    let candidate = password.trim().to_lowercase();
    COMMON.contains(candidate.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_passwords_are_found() {
        for p in ["password", "12345678", "qwertyuiop", "iloveyou1", "1q2w3e4r5t"] {
            assert!(is_common(p), "{p}");
        }
    }

    #[test]
    fn lookup_ignores_case_and_surrounding_space() {
        assert!(is_common("PassWord"));
        assert!(is_common("QWERTYUIOP"));
        assert!(is_common(" password1\n"));
    }

    #[test]
    fn uncommon_passwords_pass() {
        assert!(!is_common("correct horse battery staple 42"));
        assert!(!is_common(""));
        assert!(!is_common("كلمة مرور طويلة وغريبة"));
    }

    #[test]
    fn the_list_is_lowercase_and_within_bounds() {
        let mut n = 0;
        for line in LIST.lines() {
            assert_eq!(line, line.to_lowercase(), "{line}");
            assert!((8..=128).contains(&line.chars().count()), "{line}");
            n += 1;
        }
        assert!(n > 8000 && COMMON.len() == n, "{n} lines, {} distinct", COMMON.len());
    }
}
