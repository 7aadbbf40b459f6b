//! The derives' generated code names everything by absolute path: it must compile, without a
//! single warning, in a module where the prelude's names mean something else.
#![deny(warnings)]

mod shadowed {
    // Every prelude name the generated code could be tempted to use, made to mean something
    // else. They are used below so that nothing here is dead code.
    #![allow(non_snake_case, non_upper_case_globals)]

    pub struct Result;
    pub struct Option;
    pub struct Vec;
    pub struct Box;
    pub struct String;
    pub fn Ok() {}
    pub fn Err() {}
    pub fn Some() {}
    pub const None: () = ();

    use jetsource::{Aggregate, Apply, Event, EventSet};

    #[derive(Event, serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    #[event(name = "opened", version = 1)]
    pub struct OpenedV1 {
        pub owner: ::std::string::String,
    }

    #[derive(Event, serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    #[event(name = "opened", version = 2, previous = OpenedV1)]
    pub struct Opened {
        pub owner: ::std::string::String,
        pub currency: ::std::string::String,
    }

    impl ::core::convert::From<OpenedV1> for Opened {
        fn from(v1: OpenedV1) -> Self {
            Opened {
                owner: v1.owner,
                currency: "EUR".into(),
            }
        }
    }

    #[derive(Event, Clone, PartialEq, prost::Message)]
    #[event(name = "deposited", version = 1, codec = "protobuf")]
    pub struct Deposited {
        #[prost(uint64, tag = "1")]
        pub cents: u64,
    }

    #[derive(EventSet, Debug, PartialEq)]
    #[event_set(retired("noted"))]
    pub enum AccountEvent {
        Opened(Opened),
        Deposited(Deposited),
    }

    #[derive(Aggregate, Default, serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    #[aggregate(name = "account", events = AccountEvent, snapshot(schema = 1, every = 10))]
    pub struct Account {
        pub owner: ::std::option::Option<::std::string::String>,
        pub cents: u64,
    }

    impl Apply<Opened> for Account {
        fn apply(&mut self, event: Opened) {
            self.owner = ::std::option::Option::Some(event.owner);
        }
    }

    impl Apply<Deposited> for Account {
        fn apply(&mut self, event: Deposited) {
            self.cents += event.cents;
        }
    }

    /// A subscriber whose events are private to this module.
    #[derive(Default)]
    pub struct Audit {
        pub log: ::std::sync::Mutex<::std::vec::Vec<::std::string::String>>,
    }

    #[jetsource::subscriber(durable = "audit", deliver_from = "new", backoff_ms = [10], concurrency = 2)]
    impl Audit {
        async fn on_opened(
            &self,
            event: Opened,
            _: &jetsource::subscriber::EventContext,
        ) -> ::core::result::Result<(), jetsource::subscriber::HandlerError> {
            self.log.lock().unwrap().push(event.owner);
            ::core::result::Result::Ok(())
        }

        async fn on_deposited(
            &self,
            event: Deposited,
            _: &jetsource::subscriber::EventContext,
        ) -> ::core::result::Result<(), jetsource::subscriber::HandlerError> {
            self.log
                .lock()
                .unwrap()
                .push(::std::format!("{}", event.cents));
            ::core::result::Result::Ok(())
        }
    }

    /// Every other key of `#[subscriber]`, so each generated setting is checked here too.
    #[derive(Default)]
    pub struct Scaled;

    #[jetsource::subscriber(
        durable = "scaled",
        stream = "BANK",
        deliver_from = "2026-01-31T08:00:00Z",
        ack_wait_ms = 500,
        max_deliver = 2,
        max_ack_pending = 9,
        partitions = 4,
        member_ttl_ms = 800
    )]
    impl Scaled {
        async fn on_opened(
            &self,
            _: Opened,
            _: &jetsource::subscriber::EventContext,
        ) -> ::core::result::Result<(), jetsource::subscriber::HandlerError> {
            ::core::result::Result::Ok(())
        }
    }

    /// Uses every shadow, so `deny(warnings)` also proves none of them is dead.
    pub fn shadows() -> (Result, Option, Vec, Box, String, (), (), (), ()) {
        (Result, Option, Vec, Box, String, Ok(), Err(), Some(), None)
    }
}

use jetsource::{Aggregate, Codec, Event, EventSet, RawEvent};
use shadowed::{Account, AccountEvent, Deposited, Opened};

fn decode(name: &str, version: u32, codec: Codec, payload: &[u8]) -> Option<AccountEvent> {
    AccountEvent::decode(RawEvent {
        name,
        version,
        codec,
        payload,
    })
    .unwrap()
}

#[test]
fn derives_work_where_prelude_names_are_shadowed() {
    let _ = shadowed::shadows();

    let opened = decode("opened", 1, Codec::Json, br#"{"owner":"ada"}"#).unwrap();
    assert_eq!(
        opened,
        AccountEvent::Opened(Opened {
            owner: "ada".into(),
            currency: "EUR".into()
        })
    );

    let deposit = AccountEvent::from(Deposited { cents: 250 })
        .encode()
        .unwrap();
    assert_eq!(
        (deposit.name, deposit.codec),
        ("deposited", Codec::Protobuf)
    );
    let deposited = decode(
        deposit.name,
        deposit.version,
        deposit.codec,
        &deposit.payload,
    )
    .unwrap();
    assert_eq!(deposited, AccountEvent::Deposited(Deposited { cents: 250 }));
    assert_eq!(decode("noted", 1, Codec::Json, b"{}"), None);
    assert_eq!(Opened::VERSION, 2);

    let mut account = Account::default();
    account.apply_event(opened);
    account.apply_event(deposited);
    let snapshot = account.encode_snapshot().unwrap().unwrap();
    let restored = Account::decode_snapshot(&snapshot).unwrap().unwrap();
    assert_eq!(restored, account);
    assert_eq!(restored.owner.as_deref(), Some("ada"));
    assert_eq!(restored.cents, 250);
}

#[test]
fn the_subscriber_macro_works_where_prelude_names_are_shadowed() {
    use jetsource::subscriber::{Subscriber, SubscriberDefinition};

    let audit = shadowed::Audit::default();
    let ctx = jetsource::subscriber::EventContext {
        event_id: uuid::Uuid::now_v7(),
        event_name: "deposited".into(),
        event_version: 1,
        aggregate_type: "account".into(),
        aggregate_id: "a1".into(),
        sequence: 1,
        position: 1,
        timestamp: std::time::SystemTime::now(),
        correlation_id: "c".into(),
        causation_id: None,
        command_id: None,
        headers: Default::default(),
        delivery_count: 1,
        redriven: false,
    };
    type Handled = <shadowed::Audit as Subscriber>::Event;
    let event = Handled::decode(RawEvent {
        name: "opened",
        version: 1,
        codec: Codec::Json,
        payload: br#"{"owner":"ada"}"#,
    })
    .unwrap()
    .unwrap();
    futures::executor::block_on(audit.handle(event, &ctx)).unwrap();
    assert_eq!(*audit.log.lock().unwrap(), ["ada"]);
    assert_eq!(Handled::known_names(), ["opened", "deposited"]);
    let config = shadowed::Audit::subscriber_config();
    assert_eq!(
        (config.durable_name.as_str(), config.concurrency),
        ("audit", 2)
    );
}

#[test]
fn every_subscriber_setting_works_where_prelude_names_are_shadowed() {
    use jetsource::subscriber::{DeliverFrom, SubscriberConfig, SubscriberDefinition};
    use std::time::{Duration, UNIX_EPOCH};

    let _ = shadowed::Scaled;
    assert_eq!(
        shadowed::Scaled::subscriber_config(),
        SubscriberConfig::new("scaled")
            .stream("BANK")
            .deliver_from(DeliverFrom::Time(
                UNIX_EPOCH + Duration::from_secs(1_769_846_400)
            ))
            .ack_wait(Duration::from_millis(500))
            .max_deliver(2)
            .max_ack_pending(9)
            .partitions(4)
            .member_ttl(Duration::from_millis(800))
    );
}

/// Errors a reader can trust: each message names what went wrong and leaves the cause to
/// `source()`, so printing the chain (`a: b: c`) never shows a cause twice.
mod errors {
    use std::collections::BTreeMap;
    use std::error::Error;

    use jetsource::projection::ProjectionError;
    use jetsource::subscriber::{HandlerError, SubscriberConfig, SubscriberError};
    use jetsource::{
        AggregateId, AggregateKey, Codec, DecodeError, EncodeError, ErrorChain, Event, EventSet,
        EventStore, ExpectedVersion, InMemoryStore, InvalidInput, InvalidToken,
        JetStreamConnectOptions, JetStreamError, RawEvent, StoreError, StreamConfig,
    };

    /// Walks `error`'s sources: no message may contain the message of its source, and the
    /// chain must be `links` long. Returns the chain as printed.
    fn assert_trustworthy(error: &(dyn Error + 'static), links: usize) -> String {
        let mut seen = 1;
        let mut current = error;
        while let Some(source) = current.source() {
            let (message, cause) = (current.to_string(), source.to_string());
            assert!(
                !message.contains(&cause),
                "{message:?} repeats its source {cause:?} ({error:?})"
            );
            seen += 1;
            current = source;
        }
        assert_eq!(seen, links, "{error:?}");
        ErrorChain(error).to_string()
    }

    fn io(message: &str) -> std::io::Error {
        std::io::Error::other(message.to_owned())
    }

    #[derive(Event, serde::Serialize, serde::Deserialize, Debug)]
    #[event(name = "tagged", version = 1)]
    struct Tagged {
        by_pair: BTreeMap<(u8, u8), u8>,
    }

    #[derive(EventSet, Debug)]
    enum Tags {
        Tagged(Tagged),
    }

    #[test]
    fn no_error_repeats_its_source() {
        let backend = StoreError::Backend(Box::new(JetStreamError::Request {
            operation: "read the info of stream ORDERS".into(),
            source: Box::new(io("connection reset")),
        }));
        assert_eq!(
            assert_trustworthy(&backend, 3),
            "event store backend failed: cannot read the info of stream ORDERS: connection reset"
        );
        let corrupt = StoreError::Corrupt {
            position: 7,
            reason: "header Jetsource-Seq cannot be read".into(),
            source: Some(Box::new(io("invalid digit found in string"))),
        };
        assert_trustworthy(&corrupt, 2);
        for error in [
            JetStreamError::Auth(Box::new(io("authorization violation"))),
            JetStreamError::Connect(Box::new(io("connection refused"))),
        ] {
            assert_trustworthy(&error, 2);
        }

        let encoded = Tags::from(Tagged {
            by_pair: BTreeMap::from([((1, 2), 3)]),
        })
        .encode();
        let encode: EncodeError = encoded.expect_err("a map with tuple keys is no JSON");
        assert_trustworthy(&encode, 2);
        let malformed: DecodeError = Tags::decode(RawEvent {
            name: "tagged",
            version: 1,
            codec: Codec::Json,
            payload: b"{",
        })
        .expect_err("no JSON");
        assert_trustworthy(&malformed, 2);

        let handler = HandlerError::permanent(io("disk full"));
        assert_eq!(
            assert_trustworthy(&handler, 2),
            "permanent failure: disk full"
        );
        let subscriber = SubscriberError::JetStream {
            what: "creating consumer billing".into(),
            source: Box::new(io("no responders")),
        };
        assert_eq!(
            assert_trustworthy(&subscriber, 2),
            "creating consumer billing failed: no responders"
        );
        let database = ProjectionError::from(jetsource::projection::sqlx::Error::PoolTimedOut);
        assert_trustworthy(&database, 2);
    }

    #[tokio::test]
    async fn real_failures_keep_their_causes() {
        // Caught before anything is sent: no server is needed.
        let url = JetStreamConnectOptions::new(["nats://ops:s3cret@host:port:x"])
            .connect()
            .await
            .expect_err("no URL");
        assert!(
            matches!(&url, JetStreamError::InvalidConnectOption { option, .. }
                if option == "server URL \"nats://***@host:port:x\""),
            "{url:?}"
        );
        assert!(!assert_trustworthy(&url, 2).contains("s3cret"));

        let creds = JetStreamConnectOptions::new(["nats://127.0.0.1:4222"])
            .creds_file("/nonexistent/app.creds")
            .connect()
            .await
            .expect_err("no file");
        assert!(
            assert_trustworthy(&creds, 2)
                .starts_with("cannot use creds file /nonexistent/app.creds: "),
            "{creds:?}"
        );

        let key = AggregateKey::new("book.>", AggregateId::new("b1").unwrap());
        let refused = InMemoryStore::new()
            .append(&key, ExpectedVersion::Any, None, Vec::new())
            .await
            .expect_err("a wildcard type");
        assert!(
            matches!(
                &refused,
                StoreError::InvalidInput(InvalidInput::AggregateType {
                    source: InvalidToken::ForbiddenChar { found: '.' },
                    ..
                })
            ),
            "{refused:?}"
        );
        assert_eq!(
            assert_trustworthy(&refused, 2),
            "aggregate type \"book.>\" cannot be a subject token: it contains '.', which cannot \
             appear in one NATS subject token"
        );
    }

    #[test]
    fn messages_name_what_is_wrong() {
        // A subject prefix is no aggregate id.
        let prefix = StreamConfig::new("ORDERS", "orders.eu west")
            .validate()
            .unwrap_err()
            .to_string();
        assert_eq!(
            prefix,
            "invalid JetStream store configuration: subject prefix \"orders.eu west\" has the \
             token \"eu west\", but it contains ' ', which cannot appear in one NATS subject token"
        );
        let empty = StreamConfig::new("ORDERS", "orders..eu")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(empty.contains("has an empty token"), "{empty}");

        // Durations as people write them.
        let window = StreamConfig::new("ORDERS", "orders")
            .max_age(std::time::Duration::from_secs(90))
            .duplicate_window(std::time::Duration::from_secs(120))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            window.ends_with("duplicate_window (2m) cannot exceed max_age (1m 30s)"),
            "{window}"
        );
        let ttl = SubscriberConfig::new("billing")
            .partitions(2)
            .member_ttl(std::time::Duration::from_millis(150))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            ttl.ends_with("member_ttl is 150ms; it must be at least 500ms"),
            "{ttl}"
        );
    }
}
