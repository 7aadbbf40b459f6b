//! How values are shown: events, times, payloads, byte counts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use jetsource::subscriber::DeadLetter;
use jetsource::wire::{self, EventMetadata, WireError};
use jetsource::{Codec, StoredEvent};
use uuid::Uuid;

use crate::protobuf::{Decoded, ProtobufTypes};

/// What is shown of one event, whether the runtime's store loaded it (`events`) or it was
/// decoded from a message's headers with [`wire::EventMetadata`] (`tail`, `dead-letters`).
pub struct EventView<'a> {
    /// The aggregate type (or publisher topic).
    pub aggregate_type: &'a str,
    /// The aggregate id.
    pub aggregate_id: &'a str,
    /// The event's number within its aggregate.
    pub sequence: u64,
    /// The wire name.
    pub name: &'a str,
    /// The schema version.
    pub version: u32,
    /// The event id.
    pub id: Uuid,
    /// The stream sequence, when it is the event stream's (not a dead letter's).
    pub position: Option<u64>,
    /// The wire format, when read from the headers (the store does not say).
    pub format: Option<u32>,
    /// The payload codec.
    pub codec: Codec,
    /// When the command produced it.
    pub timestamp: SystemTime,
    /// The correlation id.
    pub correlation_id: &'a str,
    /// The causation id.
    pub causation_id: Option<&'a str>,
    /// The command id.
    pub command_id: Option<&'a str>,
    /// User headers.
    pub headers: &'a BTreeMap<String, String>,
    /// The encoded payload.
    pub payload: &'a [u8],
}

impl<'a> EventView<'a> {
    /// An event the store loaded.
    pub fn stored(event: &'a StoredEvent) -> Self {
        EventView {
            aggregate_type: &event.aggregate_type,
            aggregate_id: &event.aggregate_id,
            sequence: event.sequence,
            name: &event.name,
            version: event.version,
            id: event.id,
            position: Some(event.position),
            format: None,
            codec: event.codec,
            timestamp: event.timestamp,
            correlation_id: &event.correlation_id,
            causation_id: event.causation_id.as_deref(),
            command_id: event.command_id.as_deref(),
            headers: &event.headers,
            payload: &event.payload,
        }
    }

    /// An event read from a message: its subject's parts, decoded headers and payload.
    pub fn decoded(
        parts: wire::SubjectParts<'a>,
        metadata: &'a EventMetadata,
        position: Option<u64>,
        payload: &'a [u8],
    ) -> Self {
        EventView {
            aggregate_type: parts.aggregate_type,
            aggregate_id: parts.aggregate_id,
            sequence: metadata.sequence,
            name: &metadata.name,
            version: metadata.version,
            id: metadata.id,
            position,
            format: Some(metadata.format),
            codec: metadata.codec,
            timestamp: metadata.timestamp,
            correlation_id: &metadata.correlation_id,
            causation_id: metadata.causation_id.as_deref(),
            command_id: metadata.command_id.as_deref(),
            headers: &metadata.headers,
            payload,
        }
    }

    /// `version 3: deposited v1`: the aggregate version, wire name and schema version.
    pub fn headline(&self) -> String {
        format!("version {}: {} v{}", self.sequence, self.name, self.version)
    }

    /// The metadata lines and the payload, each line indented by two spaces; Protobuf payloads
    /// decoded with `types` when given.
    pub fn details(&self, types: Option<&ProtobufTypes>) -> String {
        let mut out = String::new();
        // Writing to a `String` cannot fail.
        let mut line = |label: &str, value: &dyn std::fmt::Display| {
            let _ = writeln!(out, "  {label:<13} {value}");
        };
        line("event id:", &self.id);
        if let Some(position) = self.position {
            line("position:", &position);
        }
        if let Some(format) = self.format {
            line("wire format:", &format);
        }
        line("timestamp:", &time(self.timestamp));
        line("correlation:", &self.correlation_id);
        if let Some(causation) = self.causation_id {
            line("causation:", &causation);
        }
        if let Some(command) = self.command_id {
            line("command id:", &command);
        }
        for (name, value) in self.headers {
            let _ = writeln!(out, "  header {name}: {value}");
        }
        out.push_str(&match self.codec {
            Codec::Protobuf => protobuf_payload(
                types.map(|types| types.decode(self.name, Some(self.version), self.payload)),
                self.payload,
                "  ",
            ),
            codec => payload(Some(codec), self.payload, "  "),
        });
        out
    }
}

/// The lines of a message after its headline, each indented by two spaces: a jetsource event
/// (format 1 or 0) as its aggregate, decoded metadata and payload; any other message as a note,
/// its `headers` (as `(name, value)` pairs) as stored, and its payload, pretty-printed if it
/// parses as JSON.
pub fn message(
    subject: &str,
    headers: &[(&str, &str)],
    payload: &[u8],
    types: Option<&ProtobufTypes>,
) -> String {
    let note = match wire::split_subject(subject) {
        None => "  note: not a jetsource event: the subject is not \
                 <prefix>.<type>.<id>.<event name>"
            .to_owned(),
        Some((_, parts)) => match EventMetadata::decode(parts, headers.iter().copied()) {
            Ok(metadata) => {
                let view = EventView::decoded(parts, &metadata, None, payload);
                return format!(
                    "  {}/{} {}\n{}",
                    view.aggregate_type,
                    view.aggregate_id,
                    view.headline(),
                    view.details(types)
                );
            }
            Err(WireError::NotAnEvent) => format!("  note: {}", WireError::NotAnEvent),
            Err(error) => format!("  note: the jetsource metadata is unreadable: {error}"),
        },
    };
    let mut lines: Vec<String> = headers
        .iter()
        .map(|(name, value)| format!("  {name}: {value}"))
        .collect();
    lines.sort();
    lines.insert(0, note);
    lines.push(self::payload(None, payload, "  "));
    lines.join("\n")
}

/// The headline of one dead letter `dead-letters list` prints:
/// `#<n> <reason>  subject=<subject>  position=<p>  deliveries=<attempts>  event=<name>
/// version=<v>  event_id=<id>  at <time>`. The event's name, version and id are left out when
/// the letter lacks them (a message that was no readable jetsource event).
pub fn dead_letter_headline(letter: &DeadLetter) -> String {
    let mut out = format!(
        "#{} {}  subject={}  position={}  deliveries={}",
        letter.dead_letter_sequence,
        letter.reason,
        letter.subject,
        letter.position,
        letter.delivery_count
    );
    // Writing to a `String` cannot fail.
    if let Some(name) = &letter.event_name {
        let _ = write!(out, "  event={name}");
    }
    if let Some(version) = letter.event_version {
        let _ = write!(out, "  version={version}");
    }
    if let Some(id) = letter.event_id {
        let _ = write!(out, "  event_id={id}");
    }
    let _ = write!(out, "  at {}", time(letter.dead_lettered_at));
    out
}

/// A duration as people write it, in the runtime's style, and as the duration flags read it
/// back: `0s`, `150ms`, `2s`, `1s 500ms`, `1m 30s`, `7d`.
pub fn duration(d: Duration) -> String {
    jetsource::HumanDuration(d).to_string()
}

/// A UTC timestamp, e.g. `2025-06-01T12:00:00.123456789Z`.
pub fn time(at: SystemTime) -> String {
    humantime::format_rfc3339_nanos(at).to_string()
}

/// The payload, each line indented by `indent`: JSON pretty-printed, anything else (Protobuf,
/// or JSON that does not parse) as hex bytes. Without a codec (a message that is not a
/// jetsource event), JSON is recognised by parsing.
pub fn payload(codec: Option<Codec>, bytes: &[u8], indent: &str) -> String {
    let parsed_json = || serde_json::from_slice::<serde_json::Value>(bytes).ok();
    let (label, body) = match codec {
        Some(Codec::Json) => match parsed_json() {
            Some(value) => ("json".to_owned(), pretty(&value)),
            None => ("json, but does not parse".to_owned(), hex(bytes)),
        },
        Some(Codec::Protobuf) => (format!("protobuf, {}", byte_count(bytes)), hex(bytes)),
        None if bytes.is_empty() => ("empty".to_owned(), String::new()),
        None => match parsed_json() {
            Some(value) => ("json".to_owned(), pretty(&value)),
            None => (byte_count(bytes), hex(bytes)),
        },
    };
    framed(&label, &body, indent)
}

/// A Protobuf payload: as JSON when `decoded` is, else as hex after a one-line note on why it
/// was not decoded; without a descriptor set (`None`), as hex.
pub fn protobuf_payload(decoded: Option<Decoded>, bytes: &[u8], indent: &str) -> String {
    match decoded {
        None => payload(Some(Codec::Protobuf), bytes, indent),
        Some(Decoded::Note(note)) => format!(
            "{indent}note: {note}\n{}",
            payload(Some(Codec::Protobuf), bytes, indent)
        ),
        Some(Decoded::Json {
            message,
            json,
            unknown_fields,
        }) => {
            let mut out = String::new();
            if !unknown_fields.is_empty() {
                let numbers = unknown_fields
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                let (fields, are) = match unknown_fields.len() {
                    1 => ("field", "is"),
                    _ => ("fields", "are"),
                };
                out.push_str(&format!(
                    "{indent}note: payload {fields} {numbers} {are} not in {message} and not \
                     shown (an older descriptor set, or the wrong message type?)\n"
                ));
            }
            out.push_str(&framed(&format!("protobuf, {message}"), &json, indent));
            out
        }
    }
}

/// `1 byte`, `8 bytes`.
fn byte_count(bytes: &[u8]) -> String {
    match bytes.len() {
        1 => "1 byte".to_owned(),
        n => format!("{n} bytes"),
    }
}

/// `payload (<label>):` and the body's lines, all indented by `indent`, the body two more.
fn framed(label: &str, body: &str, indent: &str) -> String {
    let mut out = format!("{indent}payload ({label}):");
    for line in body.lines() {
        out.push('\n');
        out.push_str(indent);
        out.push_str("  ");
        out.push_str(line);
    }
    out
}

fn pretty(value: &serde_json::Value) -> String {
    // Serializing a `Value` cannot fail: its map keys are strings.
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// Bytes as lowercase hex pairs, 16 to a line.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|line| {
            line.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn json_payloads_are_pretty_printed() {
        assert_eq!(
            payload(Some(Codec::Json), br#"{"amount":5}"#, "  "),
            "  payload (json):\n    {\n      \"amount\": 5\n    }"
        );
    }

    #[test]
    fn protobuf_and_broken_json_payloads_are_shown_as_hex() {
        let bytes: Vec<u8> = (0..18).collect();
        assert_eq!(
            payload(Some(Codec::Protobuf), &bytes, ""),
            "payload (protobuf, 18 bytes):\n  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f\n  10 11"
        );
        assert_eq!(
            payload(Some(Codec::Json), b"{\"a\"", ""),
            "payload (json, but does not parse):\n  7b 22 61 22"
        );
        assert_eq!(
            payload(None, &[0x08, 0x05], ""),
            "payload (2 bytes):\n  08 05"
        );
    }

    #[test]
    fn decoded_protobuf_is_json_and_undecoded_gets_a_note_and_hex() {
        let decoded = Decoded::Json {
            message: "shop.OrderPlaced".into(),
            json: "{\n  \"total\": 5\n}".into(),
            unknown_fields: vec![],
        };
        assert_eq!(
            protobuf_payload(Some(decoded), &[0x08, 0x05], "  "),
            "  payload (protobuf, shop.OrderPlaced):\n    {\n      \"total\": 5\n    }"
        );
        let with_unknown = Decoded::Json {
            message: "shop.OrderPlaced".into(),
            json: "{}".into(),
            unknown_fields: vec![7, 9],
        };
        assert_eq!(
            protobuf_payload(Some(with_unknown), &[], ""),
            "note: payload fields 7, 9 are not in shop.OrderPlaced and not shown (an older \
             descriptor set, or the wrong message type?)\npayload (protobuf, shop.OrderPlaced):\n  {}"
        );
        assert_eq!(
            protobuf_payload(
                Some(Decoded::Note("not decoded: why".into())),
                &[0x08, 0x05],
                "  "
            ),
            "  note: not decoded: why\n  payload (protobuf, 2 bytes):\n    08 05"
        );
        assert_eq!(
            protobuf_payload(None, &[0x08, 0x05], ""),
            "payload (protobuf, 2 bytes):\n  08 05"
        );
    }

    #[test]
    fn messages_that_are_no_readable_events_show_their_headers_and_payload() {
        let headers = [("Zeta", "z"), ("Alpha", "a")];
        assert_eq!(
            message("bank.account.a1.deposited", &headers, b"{}", None),
            "  note: neither header Jetsource nor Jetsource-Event-Id is present: not a \
             jetsource event\n  Alpha: a\n  Zeta: z\n  payload (json):\n    {}"
        );
        assert!(message("other", &headers, b"", None)
            .starts_with("  note: not a jetsource event: the subject is not "));
        let legacy_without_codec = [(
            wire::legacy::EVENT_ID,
            "0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b",
        )];
        let body = message("b.t.i.n", &legacy_without_codec, &[0x08], None);
        assert!(
            body.starts_with(
                "  note: the jetsource metadata is unreadable: field Jetsource-Codec is missing\n"
            ),
            "{body}"
        );
        assert!(body.ends_with("  payload (1 byte):\n    08"), "{body}");
    }

    #[test]
    fn the_codec_chooses_the_rendering() {
        // Protobuf bytes that happen to be valid JSON (`12`) are not taken for JSON.
        assert_eq!(
            payload(Some(Codec::Protobuf), b"12", ""),
            "payload (protobuf, 2 bytes):\n  31 32"
        );
        assert_eq!(
            payload(Some(Codec::Json), b"12", ""),
            "payload (json):\n  12"
        );
    }

    #[test]
    fn durations_read_as_people_write_them_and_parse_back() {
        for (duration, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(150), "150ms"),
            (Duration::from_micros(1_500), "1ms 500us"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_secs(2), "2s"),
            (Duration::from_millis(1_500), "1s 500ms"),
            (Duration::from_secs(90), "1m 30s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(3_600 + 1), "1h 1s"),
            (Duration::from_secs(7 * 86_400), "7d"),
            (Duration::from_secs(400 * 86_400 + 7_200), "400d 2h"),
        ] {
            assert_eq!(self::duration(duration), text);
            assert_eq!(humantime::parse_duration(text), Ok(duration), "{text}");
        }
    }

    #[test]
    fn times_are_utc_rfc3339() {
        let at = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        assert_eq!(time(at), "2023-11-14T22:13:20.123456789Z");
    }
}
