//! Accounts: input rules for signup and login, and the user as the wire sees it.
use souq_proto::accounts::User;

use crate::{
    auth::{common_passwords, password},
    clock::rfc3339,
    entity::users,
    error::{Error, Result},
};

/// Locales Souq writes mail and messages in.
pub const LOCALES: [&str; 2] = ["en", "ar"];

/// Trims and lower-cases an email and checks its shape; the error names the field.
pub fn normalize_email(raw: &str) -> Result<String> {
    let email = raw.trim().to_lowercase();
    let bad = || Error::invalid("email", "must be a valid email address");
    if email.len() < 3 || email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !domain.contains('@');
    if local.is_empty() || local.len() > 64 || !domain_ok {
        return Err(bad());
    }
    Ok(email)
}

/// Checks a new password: 8 to 128 characters and not the email itself.
pub fn check_password(password: &str, email: &str) -> Result<()> {
    let n = password.chars().count();
    if !(password::MIN_LEN..=password::MAX_LEN).contains(&n) {
        return Err(Error::invalid(
            "password",
            format!("must be {} to {} characters", password::MIN_LEN, password::MAX_LEN),
        ));
    }
    if password.trim().eq_ignore_ascii_case(email) {
        return Err(Error::invalid("password", "must not be the email address"));
    }
    if common_passwords::is_common(password) {
        return Err(Error::invalid("password", "is one of the most common passwords; choose another"));
    }
    Ok(())
}

/// Checks an optional display name.
pub fn check_name(name: Option<String>) -> Result<Option<String>> {
    match name.map(|n| n.trim().to_owned()) {
        Some(n) if n.chars().count() > 200 || n.chars().any(char::is_control) => {
            Err(Error::invalid("name", "at most 200 characters, no control characters"))
        }
        Some(n) if n.is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// Picks the locale: `en` when none is given.
pub fn check_locale(locale: Option<String>) -> Result<String> {
    match locale.as_deref().map(str::trim) {
        None | Some("") => Ok("en".into()),
        Some(l) => {
            let primary = l.split(['-', '_']).next().unwrap_or_default().to_ascii_lowercase();
            LOCALES
                .iter()
                .find(|&&x| x == primary)
                .map(|x| (*x).to_owned())
                .ok_or_else(|| Error::invalid("locale", "must be one of: en, ar"))
        }
    }
}

/// The wire form of a user.
pub fn to_wire(u: users::Model) -> User {
    User {
        id: u.id.to_string(),
        email: u.email,
        name: u.name,
        locale: u.locale,
        email_verified: u.email_verified,
        created_at: rfc3339(u.created_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(normalize_email("  Ali@Example.COM ").unwrap(), "ali@example.com");
        for bad in ["", "a", "no-at.example.com", "@example.com", "a@b", "a@.b.c", "a b@c.d", "a@b..c"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords() {
        assert!(check_password("short", "a@b.c").is_err());
        assert!(check_password(&"x".repeat(129), "a@b.c").is_err());
        assert!(check_password("ali@example.com", "ali@example.com").is_err());
        assert!(check_password("long enough", "a@b.c").is_ok());
        assert!(check_password("password1", "a@b.c").is_err());
    }

    #[test]
    fn locales() {
        assert_eq!(check_locale(None).unwrap(), "en");
        assert_eq!(check_locale(Some("ar-EG".into())).unwrap(), "ar");
        assert!(check_locale(Some("xx".into())).is_err());
    }
}
