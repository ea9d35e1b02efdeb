//! Slugs: the URL-safe name an API is called by, suggested by its name. Pure.

/// Longest slug a name suggests; a suffix may follow when it is taken.
pub const MAX_SLUG_BASE: usize = 40;

/// The slug a name suggests: lowercase ASCII letters and digits, words joined by `-`.
pub fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= MAX_SLUG_BASE {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() { "api".into() } else { slug.into() }
}

/// The slug to try on attempt `n`: the base first, then the base with a random suffix.
pub fn candidate(base: &str, attempt: u32) -> String {
    if attempt == 0 { base.to_owned() } else { format!("{base}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_lowercase_words_joined_by_dashes() {
        assert_eq!(slugify("Weather API"), "weather-api");
        assert_eq!(slugify("  --Hello,  World!! "), "hello-world");
        assert_eq!(slugify("أسعار الذهب"), "api");
        assert_eq!(slugify("Prices ذهب 2"), "prices-2");
        assert_eq!(slugify(&"x".repeat(100)).len(), 40);
        assert_eq!(candidate("gold", 0), "gold");
        assert!(candidate("gold", 1).starts_with("gold-") && candidate("gold", 1).len() == 11);
    }
}
