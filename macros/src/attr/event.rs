//! `#[event(name = "...", version = N, previous = Type, upcast = path, renamed_from = "...",
//! codec = "json" | "protobuf", first_stored_version = N)]`.

use super::{
    for_each_key, number_value, string_value, unknown_key, Number, Slot, Symbol, CODEC, EVENT,
    FIRST_STORED_VERSION, NAME, PREVIOUS, RENAMED_FROM, UPCAST, VERSION,
};
use crate::ctxt::Ctxt;
use syn::{Attribute, LitStr, Path, Type};

const ATTRIBUTE: &str = "#[event]";
const KEYS: &[Symbol] = &[
    NAME,
    VERSION,
    PREVIOUS,
    UPCAST,
    RENAMED_FROM,
    CODEC,
    FIRST_STORED_VERSION,
];

/// A payload codec, as named in `codec = "..."`.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum CodecKind {
    Json,
    Protobuf,
}

impl CodecKind {
    /// Every codec with its attribute spelling, which is also its wire name in the runtime.
    pub const ALL: &'static [(&'static str, CodecKind)] =
        &[("json", CodecKind::Json), ("protobuf", CodecKind::Protobuf)];

    fn from_name(name: &str) -> Option<CodecKind> {
        Self::ALL
            .iter()
            .find(|(spelling, _)| *spelling == name)
            .map(|(_, kind)| *kind)
    }
}

/// `codec = "..."`, kept with its literal so a type that cannot serve the codec is reported
/// there.
pub struct CodecChoice {
    pub kind: CodecKind,
    pub literal: LitStr,
}

/// Everything written in the `#[event]` attributes of one type.
pub struct EventAttrs<'a> {
    /// The first `#[event]` attribute, where "missing key" errors point; `None` if there is none.
    pub attribute: Option<&'a Attribute>,
    pub name: Option<LitStr>,
    pub version: Option<Number<u32>>,
    pub previous: Option<Type>,
    pub upcast: Option<Path>,
    pub renamed_from: Option<LitStr>,
    pub codec: Option<CodecChoice>,
    /// `first_stored_version = N`: no version older than `N` was ever stored, so a version
    /// above 1 may have no `previous`.
    pub first_stored_version: Option<Number<u32>>,
}

impl EventAttrs<'_> {
    /// The codec in use: JSON unless another was chosen.
    pub fn codec_kind(&self) -> CodecKind {
        self.codec
            .as_ref()
            .map_or(CodecKind::Json, |choice| choice.kind)
    }
}

pub fn parse<'a>(cx: &Ctxt, attrs: &'a [Attribute]) -> EventAttrs<'a> {
    let mut name = Slot::new(cx, ATTRIBUTE, NAME);
    let mut version = Slot::new(cx, ATTRIBUTE, VERSION);
    let mut previous = Slot::new(cx, ATTRIBUTE, PREVIOUS);
    let mut upcast = Slot::new(cx, ATTRIBUTE, UPCAST);
    let mut renamed_from = Slot::new(cx, ATTRIBUTE, RENAMED_FROM);
    let mut codec = Slot::new(cx, ATTRIBUTE, CODEC);
    let mut first_stored_version = Slot::new(cx, ATTRIBUTE, FIRST_STORED_VERSION);

    for_each_key(cx, attrs, EVENT, |meta| {
        if meta.path == NAME {
            name.set_parsed(meta, string_value(cx, meta)?);
        } else if meta.path == VERSION {
            version.set_parsed(meta, number_value(cx, meta)?);
        } else if meta.path == PREVIOUS {
            previous.set(&meta.path, meta.value()?.parse()?);
        } else if meta.path == UPCAST {
            upcast.set(&meta.path, meta.value()?.parse()?);
        } else if meta.path == RENAMED_FROM {
            renamed_from.set_parsed(meta, string_value(cx, meta)?);
        } else if meta.path == CODEC {
            let choice = string_value(cx, meta)?.and_then(|literal| codec_choice(cx, literal));
            codec.set_parsed(meta, choice);
        } else if meta.path == FIRST_STORED_VERSION {
            first_stored_version.set_parsed(meta, number_value(cx, meta)?);
        } else {
            unknown_key(cx, meta, ATTRIBUTE, KEYS)?;
        }
        Ok(())
    });

    let attribute = attrs.iter().find(|attr| *attr.path() == EVENT);
    EventAttrs {
        attribute,
        name: name.required(attribute),
        version: version.required(attribute),
        previous: previous.get(),
        upcast: upcast.get(),
        renamed_from: renamed_from.get(),
        codec: codec.get(),
        first_stored_version: first_stored_version.get(),
    }
}

fn codec_choice(cx: &Ctxt, literal: LitStr) -> Option<CodecChoice> {
    match CodecKind::from_name(&literal.value()) {
        Some(kind) => Some(CodecChoice { kind, literal }),
        None => {
            let known: Vec<String> = CodecKind::ALL
                .iter()
                .map(|(spelling, _)| format!("\"{spelling}\""))
                .collect();
            cx.error_spanned_by(
                &literal,
                format!(
                    "unknown codec \"{}\"; expected {}",
                    literal.value(),
                    known.join(" or ")
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::ToTokens;
    use syn::parse_quote;

    fn parse_ok(attrs: &[Attribute]) -> EventAttrs<'_> {
        let cx = Ctxt::new();
        let parsed = parse(&cx, attrs);
        cx.check().unwrap();
        parsed
    }

    #[test]
    fn reads_every_key() {
        let attrs: Vec<Attribute> = vec![
            parse_quote!(#[event(name = "opened", version = 3, previous = v2::Opened)]),
            parse_quote!(#[event(upcast = up::grade, renamed_from = "created", codec = "protobuf")]),
            parse_quote!(#[event(first_stored_version = 3)]),
        ];
        let parsed = parse_ok(&attrs);
        assert_eq!(parsed.name.unwrap().value(), "opened");
        assert_eq!(parsed.version.unwrap().value, 3);
        assert_eq!(
            parsed.previous.to_token_stream().to_string(),
            "v2 :: Opened"
        );
        assert_eq!(parsed.upcast.to_token_stream().to_string(), "up :: grade");
        assert_eq!(parsed.renamed_from.unwrap().value(), "created");
        assert_eq!(parsed.codec.unwrap().kind, CodecKind::Protobuf);
        assert_eq!(parsed.first_stored_version.unwrap().value, 3);
    }

    #[test]
    fn codec_defaults_to_json() {
        let attrs: Vec<Attribute> = vec![parse_quote!(#[event(name = "a", version = 1)])];
        assert_eq!(parse_ok(&attrs).codec_kind(), CodecKind::Json);
    }

    #[test]
    fn reports_all_mistakes_together() {
        let attrs: Vec<Attribute> = vec![
            parse_quote!(#[event(name = "a", codec = "xml", name = "b")]),
            parse_quote!(#[event(colour = 1)]),
        ];
        let cx = Ctxt::new();
        let parsed = parse(&cx, &attrs);
        assert_eq!(parsed.name.unwrap().value(), "a");
        assert!(parsed.codec.is_none());
        let messages: Vec<String> = cx
            .check()
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            messages,
            [
                "unknown codec \"xml\"; expected \"json\" or \"protobuf\"",
                "duplicate `name` in #[event]",
                "unknown key `colour` in #[event]; expected one of: `name`, `version`, `previous`, `upcast`, `renamed_from`, `codec`, `first_stored_version`",
                "missing `version` in #[event]",
            ]
        );
    }

    #[test]
    fn a_bad_value_is_not_also_missing() {
        let attrs: Vec<Attribute> = vec![parse_quote!(#[event(name = "a", version = "2")])];
        let cx = Ctxt::new();
        assert!(parse(&cx, &attrs).version.is_none());
        assert_eq!(
            cx.check().unwrap_err().to_string(),
            "`version` expects an integer literal, like `version = 1`"
        );
    }

    #[test]
    fn no_attribute_reads_nothing() {
        let parsed = parse_ok(&[]);
        assert!(parsed.attribute.is_none() && parsed.name.is_none() && parsed.version.is_none());
    }
}
