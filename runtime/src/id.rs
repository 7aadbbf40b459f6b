//! Aggregate ids that are safe to use as one NATS subject token.

use std::fmt;

/// The longest aggregate id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 255;

/// Why a string cannot be an aggregate id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidId {
    /// The id is empty.
    #[error("aggregate id is empty")]
    Empty,
    /// The id is longer than [`MAX_ID_BYTES`].
    #[error("aggregate id is {len} bytes long; the limit is {MAX_ID_BYTES}")]
    TooLong {
        /// The id's length in bytes.
        len: usize,
    },
    /// The id contains a character that would split or widen a NATS subject.
    #[error(
        "aggregate id {id:?} contains {found:?}, which cannot appear in one NATS subject token"
    )]
    ForbiddenChar {
        /// The offending id (cut to 64 characters).
        id: String,
        /// The first forbidden character.
        found: char,
    },
    /// The id contains a character outside printable ASCII. Look-alikes (a fullwidth `．` or
    /// `＊`, a Cyrillic `а`) would let two ids that read the same name two aggregates.
    #[error(
        "aggregate id {id:?} contains {found:?}; ids are printable ASCII, so encode other \
         characters (for example percent-encoding)"
    )]
    NotAscii {
        /// The offending id (cut to 64 characters).
        id: String,
        /// The first character outside printable ASCII.
        found: char,
    },
}

/// Why a string cannot stand as one NATS subject token: what an aggregate type, an event name,
/// a publisher topic or a token of a subject prefix must be. The value itself is named by the
/// error that carries this one as its [`source`](std::error::Error::source).
///
/// ```
/// use jetsource::{InvalidInput, InvalidToken};
/// # use jetsource::{AggregateId, AggregateKey, EventStore, ExpectedVersion, InMemoryStore};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let key = AggregateKey::new("book.>", AggregateId::new("b1").unwrap());
/// # let error = InMemoryStore::new().load(&key, 1).await.unwrap_err();
/// # let jetsource::StoreError::InvalidInput(error) = error else { panic!() };
/// // `error` is the refusal of a load of aggregate type "book.>".
/// assert!(matches!(
///     &error,
///     InvalidInput::AggregateType { source: InvalidToken::ForbiddenChar { found: '.' }, .. }
/// ));
/// assert_eq!(error.to_string(), "aggregate type \"book.>\" cannot be a subject token");
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidToken {
    /// The value is empty.
    #[error("it is empty")]
    Empty,
    /// The value is longer than [`MAX_ID_BYTES`].
    #[error("it is {len} bytes long; the limit is {MAX_ID_BYTES}")]
    TooLong {
        /// The value's length in bytes.
        len: usize,
    },
    /// The value contains a character that would split or widen a NATS subject (`.`, `*`, `>`,
    /// whitespace, a control character).
    #[error("it contains {found:?}, which cannot appear in one NATS subject token")]
    ForbiddenChar {
        /// The first forbidden character.
        found: char,
    },
    /// The value contains a character outside printable ASCII.
    #[error("it contains {found:?}, which is not printable ASCII")]
    NotAscii {
        /// The first character outside printable ASCII.
        found: char,
    },
}

/// A validated aggregate id: one NATS subject token of printable ASCII (no `.`, `*`, `>`,
/// spaces or control characters, nothing that only looks like ASCII), at most 255 bytes.
///
/// ```
/// use jetsource::{AggregateId, InvalidId};
/// assert_eq!(AggregateId::new("acc-42").unwrap().as_str(), "acc-42");
/// assert!(matches!(AggregateId::new("a.b"), Err(InvalidId::ForbiddenChar { found: '.', .. })));
/// assert_eq!(AggregateId::new(""), Err(InvalidId::Empty));
/// assert!(matches!(AggregateId::new("a\u{ff0e}b"), Err(InvalidId::NotAscii { .. })));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AggregateId(String);

impl AggregateId {
    /// Validates `id`.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidId> {
        let id = id.into();
        match validate_token(&id) {
            Ok(()) => Ok(AggregateId(id)),
            Err(InvalidToken::Empty) => Err(InvalidId::Empty),
            Err(InvalidToken::TooLong { len }) => Err(InvalidId::TooLong { len }),
            Err(InvalidToken::ForbiddenChar { found }) => Err(InvalidId::ForbiddenChar {
                id: id.chars().take(64).collect(),
                found,
            }),
            Err(InvalidToken::NotAscii { found }) => Err(InvalidId::NotAscii {
                id: id.chars().take(64).collect(),
                found,
            }),
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AggregateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for AggregateId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for AggregateId {
    type Error = InvalidId;
    fn try_from(id: &str) -> Result<Self, InvalidId> {
        AggregateId::new(id)
    }
}

impl TryFrom<String> for AggregateId {
    type Error = InvalidId;
    fn try_from(id: String) -> Result<Self, InvalidId> {
        AggregateId::new(id)
    }
}

/// Checks that `token` can stand as exactly one NATS subject token.
pub(crate) fn validate_token(token: &str) -> Result<(), InvalidToken> {
    if token.is_empty() {
        return Err(InvalidToken::Empty);
    }
    if token.len() > MAX_ID_BYTES {
        return Err(InvalidToken::TooLong { len: token.len() });
    }
    // `.` separates tokens, `*` and `>` are wildcards, and whitespace or control characters end
    // a subject on the wire; any of them would let an id address other aggregates.
    if let Some(found) = token
        .chars()
        .find(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control())
    {
        return Err(InvalidToken::ForbiddenChar { found });
    }
    if let Some(found) = token.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(InvalidToken::NotAscii { found });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_everything_that_is_not_one_subject_token() {
        for bad in [
            "a.b", "*", ">", "a b", "a\tb", "a\u{0}b", "a\u{7f}", "\u{2003}",
        ] {
            assert!(
                matches!(AggregateId::new(bad), Err(InvalidId::ForbiddenChar { .. })),
                "{bad:?} was accepted"
            );
        }
        assert_eq!(AggregateId::new(""), Err(InvalidId::Empty));
        for look_alike in ["a\u{ff0e}b", "\u{ff0a}", "\u{430}cc", "ü", "a\u{200b}b"] {
            assert!(
                matches!(
                    AggregateId::new(look_alike),
                    Err(InvalidId::NotAscii { .. })
                ),
                "{look_alike:?} was accepted"
            );
        }
        assert_eq!(
            AggregateId::new("x".repeat(256)),
            Err(InvalidId::TooLong { len: 256 })
        );
    }

    #[test]
    fn accepts_ordinary_ids() {
        for good in [
            "acc-1",
            "0190c0de-0000-7000-8000-000000000000",
            "user@example",
            "a+b=c~d",
            "order#7/line:2",
            &"x".repeat(255),
        ] {
            assert!(AggregateId::new(good).is_ok(), "{good:?} was rejected");
        }
    }
}
