//! How values are shown: times, payloads, byte counts.

use std::time::SystemTime;

use jetsource::Codec;

use crate::protobuf::Decoded;

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

/// The payload of a message whose codec header says `codec_name`: as [`payload`] for the
/// codecs jetsource writes, as hex for any other.
pub fn labelled_payload(codec_name: &str, bytes: &[u8], indent: &str) -> String {
    match Codec::parse(codec_name) {
        Some(codec) => payload(Some(codec), bytes, indent),
        None => framed(
            &format!("codec {codec_name:?}, {}", byte_count(bytes)),
            &hex(bytes),
            indent,
        ),
    }
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
    use std::time::{Duration, UNIX_EPOCH};

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
    fn the_codec_header_chooses_the_rendering() {
        // Protobuf bytes that happen to be valid JSON (`12`) are not taken for JSON.
        assert_eq!(
            labelled_payload("protobuf", b"12", ""),
            "payload (protobuf, 2 bytes):\n  31 32"
        );
        assert_eq!(labelled_payload("json", b"12", ""), "payload (json):\n  12");
        assert_eq!(
            labelled_payload("avro", &[0x01], ""),
            "payload (codec \"avro\", 1 byte):\n  01"
        );
    }

    #[test]
    fn times_are_utc_rfc3339() {
        let at = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        assert_eq!(time(at), "2023-11-14T22:13:20.123456789Z");
    }
}
