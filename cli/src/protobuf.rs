//! Protobuf payloads decoded with message types from a descriptor set (`--descriptor-set`),
//! chosen per event by `--message` mappings or by the naming rule.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};

use crate::args::DecodeArgs;
use crate::error::CliError;

/// `--message <event>[@<version>]=<package.Message>`: which message type an event's payload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMapping {
    /// The wire event name.
    pub event: String,
    /// Only this schema version of the event; all versions when absent.
    pub version: Option<u32>,
    /// The full message name, e.g. `shop.OrderPlaced` (a leading `.` is dropped).
    pub message: String,
}

impl FromStr for MessageMapping {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        const FORM: &str = "expected <event_name>=<package.Message>, or \
                            <event_name>@<version>=<package.Message> for one schema version";
        let (event, message) = text.split_once('=').ok_or(FORM)?;
        let (event, version) = match event.split_once('@') {
            Some((event, version)) => {
                let version = version
                    .parse::<u32>()
                    .map_err(|_| format!("{version:?} is not a schema version number; {FORM}"))?;
                (event, Some(version))
            }
            None => (event, None),
        };
        let message = message.strip_prefix('.').unwrap_or(message);
        if event.is_empty() || message.is_empty() || event.contains(char::is_whitespace) {
            return Err(FORM.to_owned());
        }
        Ok(MessageMapping {
            event: event.to_owned(),
            version,
            message: message.to_owned(),
        })
    }
}

impl fmt::Display for MessageMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.event)?;
        if let Some(version) = self.version {
            write!(f, "@{version}")?;
        }
        write!(f, "={}", self.message)
    }
}

/// The message types of a descriptor set, and which event uses which.
#[derive(Debug)]
pub struct ProtobufTypes {
    /// `--message` mappings, by event name and optional version.
    mapped: HashMap<(String, Option<u32>), (MessageDescriptor, String)>,
    /// Every message type (map entries aside) by the snake_case of its short name.
    by_snake_name: HashMap<String, Vec<MessageDescriptor>>,
}

/// What decoding one payload gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// The payload as pretty-printed JSON, with the message type's full name and the numbers
    /// of top-level fields the type does not declare (which JSON cannot show).
    Json {
        /// The full message name.
        message: String,
        /// The JSON text.
        json: String,
        /// Field numbers in the payload that the type does not declare.
        unknown_fields: Vec<u32>,
    },
    /// Not decoded, and why, in one line.
    Note(String),
}

impl ProtobufTypes {
    /// Loads `--descriptor-set` and checks every `--message` against it; `None` without one.
    pub fn load(args: &DecodeArgs) -> Result<Option<Self>, CliError> {
        let Some(path) = &args.descriptor_set else {
            return Ok(None);
        };
        let bytes = std::fs::read(path).map_err(|e| CliError::DescriptorSet {
            path: path.display().to_string(),
            reason: format!("cannot read it: {e}"),
        })?;
        Self::from_bytes(path, &bytes, &args.messages).map(Some)
    }

    /// The types of the serialized `FileDescriptorSet` `bytes`, read from `path`.
    pub fn from_bytes(
        path: &Path,
        bytes: &[u8],
        mappings: &[MessageMapping],
    ) -> Result<Self, CliError> {
        let pool = DescriptorPool::decode(bytes).map_err(|e| CliError::DescriptorSet {
            path: path.display().to_string(),
            reason: format!(
                "not a usable serialized google.protobuf.FileDescriptorSet ({e}); write one with \
                 `protoc --include_imports --descriptor_set_out=FILE` or `buf build -o FILE`"
            ),
        })?;
        let mut mapped: HashMap<(String, Option<u32>), (MessageDescriptor, String)> =
            HashMap::new();
        for mapping in mappings {
            let descriptor = pool.get_message_by_name(&mapping.message).ok_or_else(|| {
                CliError::DescriptorSet {
                    path: path.display().to_string(),
                    reason: format!(
                        "it has no message type {} (from --message {mapping}); message names \
                         are full, with the package, e.g. shop.OrderPlaced",
                        mapping.message
                    ),
                }
            })?;
            let key = (mapping.event.clone(), mapping.version);
            if let Some((_, earlier)) = mapped.get(&key) {
                if earlier != &mapping.to_string() {
                    return Err(CliError::ConflictingMessageMappings {
                        first: earlier.clone(),
                        second: mapping.to_string(),
                    });
                }
            }
            mapped.insert(key, (descriptor, mapping.to_string()));
        }
        let mut by_snake_name: HashMap<String, Vec<MessageDescriptor>> = HashMap::new();
        for message in pool.all_messages().filter(|m| !m.is_map_entry()) {
            by_snake_name
                .entry(snake_case(message.name()))
                .or_default()
                .push(message);
        }
        for candidates in by_snake_name.values_mut() {
            candidates.sort_by(|a, b| a.full_name().cmp(b.full_name()));
        }
        Ok(ProtobufTypes {
            mapped,
            by_snake_name,
        })
    }

    /// Decodes the payload of event `name` (schema `version`, when known) as JSON, or says why
    /// it cannot.
    pub fn decode(&self, name: &str, version: Option<u32>, payload: &[u8]) -> Decoded {
        let (descriptor, how) = match self.message_for(name, version) {
            Ok(found) => found,
            Err(note) => return Decoded::Note(note),
        };
        let message = match DynamicMessage::decode(descriptor.clone(), payload) {
            Ok(message) => message,
            Err(e) => {
                return Decoded::Note(format!(
                    "the payload does not decode as {} ({how}): {e}",
                    descriptor.full_name()
                ))
            }
        };
        match to_json(&message) {
            Ok(json) => Decoded::Json {
                message: descriptor.full_name().to_owned(),
                json,
                unknown_fields: {
                    let mut numbers: Vec<u32> =
                        message.unknown_fields().map(|f| f.number()).collect();
                    numbers.sort_unstable();
                    numbers.dedup();
                    numbers
                },
            },
            Err(e) => Decoded::Note(format!(
                "the payload decodes as {} ({how}) but cannot be shown as JSON: {e}",
                descriptor.full_name()
            )),
        }
    }

    /// The message type for event `name`, and how it was chosen; or why there is none.
    fn message_for(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<(&MessageDescriptor, String), String> {
        let explicit = version
            .and_then(|v| self.mapped.get(&(name.to_owned(), Some(v))))
            .or_else(|| self.mapped.get(&(name.to_owned(), None)));
        if let Some((descriptor, mapping)) = explicit {
            return Ok((descriptor, format!("--message {mapping}")));
        }
        match self.by_snake_name.get(name).map(Vec::as_slice) {
            Some([only]) => Ok((only, format!("named like event {name}"))),
            Some(several) if !several.is_empty() => Err(format!(
                "not decoded: {} message types are named like event {name} ({}); choose one \
                 with --message {name}=<package.Message>",
                several.len(),
                several
                    .iter()
                    .map(|m| m.full_name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => Err(format!(
                "not decoded: no message type in the descriptor set is named like event {name}; \
                 map one with --message {name}=<package.Message>"
            )),
        }
    }
}

/// The message as pretty JSON: fields in declaration order under their `.proto` names, unset
/// ones with their defaults, 64-bit integers as numbers.
fn to_json(message: &DynamicMessage) -> Result<String, serde_json::Error> {
    let options = SerializeOptions::new()
        .stringify_64_bit_integers(false)
        .use_proto_field_name(true)
        .skip_default_fields(false);
    let mut serializer = serde_json::Serializer::pretty(Vec::new());
    message.serialize_with_options(&mut serializer, &options)?;
    // serde_json writes UTF-8 only.
    Ok(String::from_utf8_lossy(&serializer.into_inner()).into_owned())
}

/// `OrderPlaced` -> `order_placed`, `HTTPRequestSent` -> `http_request_sent`, `OrderV2` ->
/// `order_v2`.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() && i > 0 {
            let previous = chars[i - 1];
            let next_is_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if previous.is_lowercase()
                || previous.is_ascii_digit()
                || (previous.is_uppercase() && next_is_lower)
            {
                out.push('_');
            }
        }
        out.extend(c.to_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_snake_case() {
        for (name, snake) in [
            ("OrderPlaced", "order_placed"),
            ("HTTPRequestSent", "http_request_sent"),
            ("OrderV2", "order_v2"),
            ("Order2Shipped", "order2_shipped"),
            ("deposited", "deposited"),
            ("A", "a"),
        ] {
            assert_eq!(snake_case(name), snake, "{name}");
        }
    }

    #[test]
    fn mappings_parse_with_an_optional_version() {
        assert_eq!(
            "order_placed=shop.OrderPlaced".parse(),
            Ok(MessageMapping {
                event: "order_placed".into(),
                version: None,
                message: "shop.OrderPlaced".into(),
            })
        );
        let versioned: MessageMapping = "order_placed@1=.shop.OrderPlacedV1".parse().unwrap();
        assert_eq!(versioned.version, Some(1));
        assert_eq!(versioned.message, "shop.OrderPlacedV1");
        assert_eq!(versioned.to_string(), "order_placed@1=shop.OrderPlacedV1");
        for bad in [
            "order_placed",
            "=shop.X",
            "order_placed=",
            "a@x=shop.X",
            "a b=shop.X",
        ] {
            let err = bad.parse::<MessageMapping>().unwrap_err();
            assert!(
                err.contains("<event_name>=<package.Message>"),
                "{bad}: {err}"
            );
        }
    }

    use prost_reflect::prost::Message;
    use prost_reflect::prost_types::{
        field_descriptor_proto::{Label, Type},
        DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    };

    fn field(name: &str, number: i32, kind: Type) -> FieldDescriptorProto {
        FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            label: Some(Label::Optional as i32),
            r#type: Some(kind as i32),
            json_name: None,
            ..Default::default()
        }
    }

    fn message(name: &str, fields: Vec<FieldDescriptorProto>) -> DescriptorProto {
        DescriptorProto {
            name: Some(name.into()),
            field: fields,
            ..Default::default()
        }
    }

    /// `shop.OrderPlaced { int64 total = 1; string currency = 2; }`, `shop.OrderShipped {
    /// string tracking = 1; }` and `billing.OrderShipped {}`.
    fn descriptor_set() -> Vec<u8> {
        let file = |name: &str, package: &str, messages| FileDescriptorProto {
            name: Some(name.into()),
            package: Some(package.into()),
            message_type: messages,
            syntax: Some("proto3".into()),
            ..Default::default()
        };
        FileDescriptorSet {
            file: vec![
                file(
                    "shop.proto",
                    "shop",
                    vec![
                        message(
                            "OrderPlaced",
                            vec![
                                field("total", 1, Type::Int64),
                                field("currency", 2, Type::String),
                            ],
                        ),
                        message("OrderShipped", vec![field("tracking", 1, Type::String)]),
                    ],
                ),
                file(
                    "billing.proto",
                    "billing",
                    vec![message("OrderShipped", vec![])],
                ),
            ],
        }
        .encode_to_vec()
    }

    fn types(mappings: &[&str]) -> Result<ProtobufTypes, CliError> {
        let mappings: Vec<MessageMapping> = mappings.iter().map(|m| m.parse().unwrap()).collect();
        ProtobufTypes::from_bytes(Path::new("shop.binpb"), &descriptor_set(), &mappings)
    }

    /// `total = 1250, currency = "EUR"`, plus field 7 (varint 1) when `extra`.
    fn order_placed(extra: bool) -> Vec<u8> {
        let mut bytes = vec![0x08, 0xe2, 0x09, 0x12, 0x03, b'E', b'U', b'R'];
        if extra {
            bytes.extend([0x38, 0x01]);
        }
        bytes
    }

    #[test]
    fn payloads_decode_by_mapping_or_by_name() {
        let expected = Decoded::Json {
            message: "shop.OrderPlaced".into(),
            json: "{\n  \"total\": 1250,\n  \"currency\": \"EUR\"\n}".into(),
            unknown_fields: vec![],
        };
        let by_name = types(&[]).unwrap();
        assert_eq!(
            by_name.decode("order_placed", Some(1), &order_placed(false)),
            expected
        );
        let mapped = types(&["placed=shop.OrderPlaced"]).unwrap();
        assert_eq!(
            mapped.decode("placed", None, &order_placed(false)),
            expected
        );
        // Defaults are shown; fields the type lacks are reported.
        let Decoded::Json {
            json,
            unknown_fields,
            ..
        } = by_name.decode("order_placed", None, &order_placed(true))
        else {
            panic!("not decoded");
        };
        assert_eq!(unknown_fields, vec![7]);
        assert!(json.contains("\"total\": 1250"), "{json}");
        let Decoded::Json { json, .. } = by_name.decode("order_placed", None, &[]) else {
            panic!("an empty payload is the message with its defaults");
        };
        assert_eq!(json, "{\n  \"total\": 0,\n  \"currency\": \"\"\n}");
    }

    #[test]
    fn a_versioned_mapping_wins_for_its_version() {
        let types = types(&[
            "order_placed=shop.OrderPlaced",
            "order_placed@1=shop.OrderShipped",
        ])
        .unwrap();
        assert!(matches!(
            types.decode("order_placed", Some(2), &order_placed(false)),
            Decoded::Json { .. }
        ));
        let Decoded::Note(note) = types.decode("order_placed", Some(1), &order_placed(false))
        else {
            panic!("decoded with the wrong type");
        };
        assert!(
            note.starts_with(
                "the payload does not decode as shop.OrderShipped (--message \
                 order_placed@1=shop.OrderShipped): "
            ),
            "{note}"
        );
    }

    #[test]
    fn ambiguous_missing_and_wrong_types_give_notes() {
        let types = types(&[]).unwrap();
        let Decoded::Note(note) = types.decode("order_shipped", None, b"") else {
            panic!("chose one of two types");
        };
        assert_eq!(
            note,
            "not decoded: 2 message types are named like event order_shipped \
             (billing.OrderShipped, shop.OrderShipped); choose one with --message \
             order_shipped=<package.Message>"
        );
        let Decoded::Note(note) = types.decode("refunded", None, b"") else {
            panic!("found a type for refunded");
        };
        assert!(
            note.contains("--message refunded=<package.Message>"),
            "{note}"
        );
        let Decoded::Note(note) = types.decode("order_placed", None, &[0x0a, 0x09]) else {
            panic!("decoded a truncated payload");
        };
        assert!(
            note.starts_with(
                "the payload does not decode as shop.OrderPlaced (named like event \
                              order_placed): "
            ),
            "{note}"
        );
    }

    #[test]
    fn mappings_must_name_types_of_the_set_and_agree() {
        let err = types(&["placed=OrderPlaced"]).unwrap_err().to_string();
        assert_eq!(
            err,
            "descriptor set shop.binpb: it has no message type OrderPlaced (from --message \
             placed=OrderPlaced); message names are full, with the package, e.g. shop.OrderPlaced"
        );
        let err = types(&["placed=shop.OrderPlaced", "placed=shop.OrderShipped"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("placed=shop.OrderShipped"), "{err}");
        assert!(types(&["placed=shop.OrderPlaced", "placed=.shop.OrderPlaced"]).is_ok());
    }

    #[test]
    fn a_file_that_is_no_descriptor_set_is_refused_with_a_hint() {
        let err = ProtobufTypes::from_bytes(Path::new("x.bin"), b"\xff\xff\xff", &[]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("descriptor set x.bin: not a usable"),
            "{text}"
        );
        assert!(text.contains("--descriptor_set_out"), "{text}");
    }
}
