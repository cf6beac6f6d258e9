//! The shared shape of a validated identifier.

use crate::ValidationError;

/// Which characters an identifier accepts beyond ASCII letters and digits.
pub(crate) struct Charset {
    pub(crate) extra: &'static str,
    pub(crate) lowercase_only: bool,
}

/// Checks `s` against a length bound and a character set; the error names `component`.
pub(crate) fn validate(
    component: &'static str,
    s: &str,
    max_len: usize,
    charset: &Charset,
) -> Result<(), ValidationError> {
    if s.is_empty() {
        return Err(ValidationError::new(component, "must not be empty"));
    }
    if s.len() > max_len {
        return Err(ValidationError::new(
            component,
            format!("is {} bytes long; the maximum is {max_len}", s.len()),
        ));
    }
    if let Some(bad) = s.chars().find(|&c| {
        let alnum = if charset.lowercase_only {
            c.is_ascii_lowercase() || c.is_ascii_digit()
        } else {
            c.is_ascii_alphanumeric()
        };
        !(alnum || charset.extra.contains(c))
    }) {
        let letters = if charset.lowercase_only {
            "a-z, 0-9"
        } else {
            "A-Z, a-z, 0-9"
        };
        return Err(ValidationError::new(
            component,
            format!(
                "character {bad:?} is not allowed; use {letters} and {:?}",
                charset.extra
            ),
        ));
    }
    Ok(())
}

/// Declares a validated string newtype with `parse`, `as_str`, `Display`, `FromStr`, and serde
/// through `parse` (so deserialising can never build an invalid value).
macro_rules! identifier {
    (
        $(#[$meta:meta])*
        $name:ident, component = $component:literal, max = $max:expr,
        extra = $extra:literal, lowercase = $lower:literal
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The longest accepted value, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validates `s`: non-empty, at most `MAX_LEN` bytes, only the allowed characters.
            pub fn parse(s: impl Into<String>) -> Result<Self, $crate::ValidationError> {
                let s = s.into();
                $crate::names::ident::validate(
                    $component,
                    &s,
                    $max,
                    &$crate::names::ident::Charset { extra: $extra, lowercase_only: $lower },
                )?;
                Ok(Self(s))
            }

            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::ValidationError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

pub(crate) use identifier;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SET: Charset = Charset {
        extra: "_-",
        lowercase_only: false,
    };

    #[test]
    fn messages_name_the_component() {
        let e = validate("project", "a b", 10, &SET).unwrap_err();
        assert_eq!(e.component, "project");
        assert!(e.to_string().contains("' '"), "{e}");
        assert!(validate("project", "", 10, &SET).is_err());
        assert!(validate("project", "abcdefghijk", 10, &SET).is_err());
    }

    proptest! {
        #[test]
        fn accepted_values_hold_no_glob_or_brace(s in "\\PC{0,80}") {
            for extra in ["_-", "_.:-", "_.:/@=+-"] {
                if validate("x", &s, 64, &Charset { extra, lowercase_only: false }).is_ok() {
                    let forbidden = ['{', '}', '*', '?', '[', ']', '\\', ' '];
                    prop_assert!(!s.contains(forbidden), "accepted {:?}", s);
                    prop_assert!(!s.is_empty() && s.len() <= 64);
                }
            }
        }
    }
}
