//! One way to give an enum its stored and served names: [`string_enum!`] writes each variant's
//! string once, and derives from it serde's name (so the API and OpenAPI agree), `as_str` (the
//! stored value), `Display` and `FromStr` (failing with [`UnknownName`]).

/// A name that is none of an enum's: says which enum, what was given and what is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {given:?}; known: {known}")]
pub struct UnknownName {
    /// What the name should have named (e.g. `incident status`).
    pub what: &'static str,
    pub given: String,
    /// The known names, comma-separated.
    pub known: String,
}

/// Declares a fieldless enum whose variants have fixed string names:
/// `string_enum!(#[derive(ToSchema)] Kind "kind" { A => "a", B => "b" })`. The enum derives
/// `Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize` (add more with attributes)
/// and gets `ALL`, `as_str`, `Display` and `FromStr`; `"kind"` names it in parse errors.
// The names are matched as `tt`, not `literal`: a `literal` fragment reaches a derive wrapped in
// an invisible group, which utoipa does not read (its OpenAPI names would be the variants').
macro_rules! string_enum {
    (
        $(#[$m:meta])*
        $vis:vis $name:ident $what:literal {
            $($(#[$vm:meta])* $variant:ident => $text:tt),+ $(,)?
        }
    ) => {
        $(#[$m])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
        )]
        $vis enum $name {
            $($(#[$vm])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored and served name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::domain::names::UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    $crate::domain::names::UnknownName {
                        what: $what,
                        given: s.to_owned(),
                        known: Self::ALL
                            .iter()
                            .map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    }
                })
            }
        }
    };
}
pub(crate) use string_enum;

#[cfg(test)]
mod tests {
    string_enum!(
        /// A test enum.
        Colour "colour" {
            Red => "red",
            DarkBlue => "dark_blue",
        }
    );

    #[test]
    fn one_name_serves_storage_serde_and_parsing() {
        for c in Colour::ALL {
            assert_eq!(c.as_str().parse::<Colour>().unwrap(), *c);
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::json!(c.as_str())
            );
        }
        assert_eq!(Colour::DarkBlue.to_string(), "dark_blue");
        assert_eq!(
            "green".parse::<Colour>().unwrap_err().to_string(),
            "unknown colour \"green\"; known: red, dark_blue"
        );
    }
}
