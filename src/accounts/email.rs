//! Email addresses as sign-in names: trimmed, checked for shape, domain lower-cased.

use std::fmt;

/// Longest address SMTP can carry (RFC 5321: 254 in a path).
const MAX_LEN: usize = 254;
const MAX_LOCAL_LEN: usize = 64;

/// Why an address was refused; the message tells the person what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("enter an email address like name@example.com (at most 254 characters, no spaces)")]
pub struct InvalidEmail;

/// A normalised email address. The local part keeps its case (mail servers may honour it);
/// the domain is lower-cased. Lookups and uniqueness are case-insensitive in Postgres
/// (`lower(email)`), so `Ann@Example.com` and `ann@example.com` are one account.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// # Errors
    /// [`InvalidEmail`] unless the input (trimmed) is `local@domain.tld` without whitespace
    /// or control characters and within the length limits.
    pub fn parse(input: &str) -> Result<Self, InvalidEmail> {
        let input = input.trim();
        let (local, domain) = input.rsplit_once('@').ok_or(InvalidEmail)?;
        let clean = |s: &str| !s.chars().any(|c| c.is_whitespace() || c.is_control());
        let domain_ok = domain.contains('.')
            && domain
                .split('.')
                .all(|label| !label.is_empty() && !label.contains('@'));
        if input.len() <= MAX_LEN
            && !local.is_empty()
            && local.len() <= MAX_LOCAL_LEN
            && !local.contains('@')
            && domain_ok
            && clean(input)
        {
            Ok(Self(format!("{local}@{}", domain.to_lowercase())))
        } else {
            Err(InvalidEmail)
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_trimmed_and_their_domain_lowercased() {
        assert_eq!(
            Email::parse("  Ann.Lee@Example.COM \n").unwrap().as_str(),
            "Ann.Lee@example.com"
        );
        assert_eq!(Email::parse("a+tag@x.io").unwrap().as_str(), "a+tag@x.io");
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for bad in [
            "",
            "ann",
            "@example.com",
            "ann@",
            "ann@localhost",
            "ann@example..com",
            "ann@.example.com",
            "a@b@example.com",
            "an n@example.com",
            "ann@exa\u{0}mple.com",
        ] {
            assert_eq!(Email::parse(bad), Err(InvalidEmail), "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert_eq!(Email::parse(&long), Err(InvalidEmail));
    }
}
