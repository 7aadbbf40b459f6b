//! How an event's payload is encoded.

/// The payload encoding of an event, stored beside the payload (never inside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// JSON through serde; the default.
    Json,
    /// Protobuf through prost.
    Protobuf,
}

impl Codec {
    /// The codec's wire name, as stored in event metadata.
    ///
    /// ```
    /// assert_eq!(jetsource::Codec::Protobuf.as_str(), "protobuf");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::Protobuf => "protobuf",
        }
    }

    /// Parses a wire name written by [`Codec::as_str`].
    ///
    /// ```
    /// use jetsource::Codec;
    /// assert_eq!(Codec::parse("json"), Some(Codec::Json));
    /// assert_eq!(Codec::parse("xml"), None);
    /// ```
    pub fn parse(name: &str) -> Option<Codec> {
        match name {
            "json" => Some(Codec::Json),
            "protobuf" => Some(Codec::Protobuf),
            _ => None,
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
