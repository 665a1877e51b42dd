//! API keys: what a key may do (its scopes, CloudConvert's names) and what is shown of
//! it. A key itself is never stored, only its SHA-256 hash; its id is the start of that
//! hash, so a key made before ids existed has one too.

use crate::Timestamp;

/// One thing a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    UserRead,
    UserWrite,
    TaskRead,
    TaskWrite,
    WebhookRead,
    WebhookWrite,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::UserRead,
        Scope::UserWrite,
        Scope::TaskRead,
        Scope::TaskWrite,
        Scope::WebhookRead,
        Scope::WebhookWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::UserRead => "user.read",
            Scope::UserWrite => "user.write",
            Scope::TaskRead => "task.read",
            Scope::TaskWrite => "task.write",
            Scope::WebhookRead => "webhook.read",
            Scope::WebhookWrite => "webhook.write",
        }
    }

    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }

    fn bit(self) -> u8 {
        1 << Scope::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub fn all() -> Scopes {
        Scope::ALL.into_iter().fold(Scopes::default(), Scopes::with)
    }

    pub fn with(self, scope: Scope) -> Scopes {
        Scopes(self.0 | scope.bit())
    }

    pub fn has(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Every scope of `other` is in this set.
    pub fn covers(self, other: Scopes) -> bool {
        other.0 & !self.0 == 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn names(self) -> Vec<&'static str> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.has(*s))
            .map(Scope::as_str)
            .collect()
    }

    /// From names (`task.read`, ...); the message names the first unknown one.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Scopes, String> {
        names.into_iter().try_fold(Scopes::default(), |set, name| {
            Scope::parse(name).map(|s| set.with(s)).ok_or_else(|| {
                format!(
                    "unknown scope `{name}`: the scopes are {}",
                    Scopes::all().names().join(", ")
                )
            })
        })
    }

    /// As stored: the names, space-separated.
    pub fn to_stored(self) -> String {
        self.names().join(" ")
    }

    /// From what a store holds; nothing stored (a key made before scopes): every scope.
    pub fn from_stored(stored: Option<&str>) -> Scopes {
        match stored {
            None => Scopes::all(),
            Some(s) => Scopes::parse(s.split_whitespace()).unwrap_or_default(),
        }
    }
}

/// What is shown of a key: never the key, only its first characters.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// The key's first characters (`rc_AbCd`); None for a key made before they were kept.
    pub prefix: Option<String>,
    pub scopes: Scopes,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
}

/// The id of the key with this SHA-256 hash (hex): its first 16 digits.
pub fn key_id(key_hash: &str) -> String {
    key_hash.chars().take(16).collect()
}

/// The characters of a key shown in lists: `rc_` and four more.
pub fn key_prefix(key: &str) -> String {
    key.chars().take(7).collect()
}

/// How often a key's `last_used_at` is written: at most once in this long.
pub const LAST_USED_EVERY_MS: i64 = 60_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_cover() {
        let s = Scopes::parse(["task.read", "webhook.write"]).unwrap();
        assert!(s.has(Scope::TaskRead) && s.has(Scope::WebhookWrite) && !s.has(Scope::TaskWrite));
        assert_eq!(Scopes::from_stored(Some(&s.to_stored())), s);
        assert_eq!(Scopes::from_stored(None), Scopes::all());
        assert!(Scopes::all().covers(s) && !s.covers(Scopes::all()));
        let e = Scopes::parse(["task.read", "jobs.write"]).unwrap_err();
        assert!(e.contains("`jobs.write`") && e.contains("task.write"), "{e}");
    }
}
