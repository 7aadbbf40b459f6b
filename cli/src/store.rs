//! Opening an existing event stream as the runtime's [`JetStreamStore`], so the commands read
//! it through the runtime's own decoding instead of a copy of it.

use async_nats::jetstream::{self, context::GetStreamErrorKind, stream, ErrorCode};
use jetsource::{JetStreamStorage, JetStreamStore, StreamConfig};

use crate::args::StreamArgs;
use crate::error::CliError;

/// The stream `name`, or [`CliError::StreamNotFound`].
pub async fn get_stream(js: &jetstream::Context, name: &str) -> Result<stream::Stream, CliError> {
    js.get_stream(name).await.map_err(|e| match e.kind() {
        GetStreamErrorKind::JetStream(api) if api.error_code() == ErrorCode::STREAM_NOT_FOUND => {
            CliError::StreamNotFound(name.to_owned())
        }
        GetStreamErrorKind::InvalidStreamName | GetStreamErrorKind::EmptyName => {
            CliError::StreamNotFound(format!("{name:?} (not a valid stream name)"))
        }
        _ => CliError::request(format!("looking up stream {name}"), &e),
    })
}

/// The store over the existing stream `args.stream`, configured exactly as the stream is, so
/// that opening it changes nothing on the server.
///
/// The runtime's store also makes sure the snapshot bucket `<stream>_SNAPSHOTS` exists, which
/// jetsource created with the stream; on a stream without one, opening creates it.
pub async fn open_existing(
    client: async_nats::Client,
    args: &StreamArgs,
    request_timeout: std::time::Duration,
) -> Result<JetStreamStore, CliError> {
    let mut js = jetstream::new(client.clone());
    js.set_timeout(request_timeout);
    let mut handle = get_stream(&js, &args.stream).await?;
    let existing = handle
        .info()
        .await
        .map_err(|e| CliError::request(format!("reading stream {}", args.stream), &e))?
        .config
        .clone();
    let config = mirror(&args.stream, args.prefix.as_deref(), &existing)?;
    JetStreamStore::with_client(client, config, request_timeout)
        .await
        .map_err(|e| CliError::from_store(&format!("opening stream {}", args.stream), e))
}

/// The runtime configuration that matches `existing`, for the subject prefix `prefix` (or the
/// one the stream's single `<prefix>.>` subject names).
fn mirror(
    name: &str,
    prefix: Option<&str>,
    existing: &stream::Config,
) -> Result<StreamConfig, CliError> {
    let not_jetsource = |problem: String| CliError::NotJetsourceStream {
        stream: name.to_owned(),
        problem,
    };
    let captured = match existing.subjects.as_slice() {
        [only] => only.strip_suffix(".>"),
        _ => None,
    };
    let prefix = match (prefix, captured) {
        (Some(given), Some(captured)) if given == captured => given,
        (Some(given), _) => {
            return Err(not_jetsource(format!(
                "it captures {:?}, not {given}.> (check --prefix)",
                existing.subjects
            )))
        }
        (None, Some(captured)) => captured,
        (None, None) => {
            return Err(not_jetsource(format!(
                "it captures {:?}, not one `<prefix>.>` subject",
                existing.subjects
            )))
        }
    };
    let mut config = StreamConfig::new(name, prefix)
        .storage(match existing.storage {
            stream::StorageType::Memory => JetStreamStorage::Memory,
            stream::StorageType::File => JetStreamStorage::File,
        })
        .replicas(existing.num_replicas)
        .max_age(existing.max_age)
        .max_bytes(existing.max_bytes)
        .max_message_size(existing.max_message_size)
        .duplicate_window(existing.duplicate_window);
    config.allow_direct = existing.allow_direct;
    config.allow_atomic_publish = existing.allow_atomic_publish;
    config
        .validate()
        .map_err(|e| not_jetsource(e.to_string()))?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn jetsource_stream(subjects: &[&str]) -> stream::Config {
        stream::Config {
            name: "ORDERS".into(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            storage: stream::StorageType::Memory,
            num_replicas: 1,
            duplicate_window: Duration::from_secs(30),
            allow_direct: true,
            allow_atomic_publish: true,
            max_bytes: -1,
            max_message_size: -1,
            ..Default::default()
        }
    }

    #[test]
    fn the_prefix_is_read_from_the_stream_subject() {
        let config = mirror("ORDERS", None, &jetsource_stream(&["orders.eu"])).unwrap_err();
        assert!(
            config.to_string().contains("one `<prefix>.>` subject"),
            "{config}"
        );
        let config = mirror("ORDERS", None, &jetsource_stream(&["orders.eu.>"])).unwrap();
        assert_eq!(config.prefix, "orders.eu");
        assert_eq!(config.storage, JetStreamStorage::Memory);
        assert_eq!(config.duplicate_window, Duration::from_secs(30));
    }

    #[test]
    fn a_wrong_prefix_is_reported_with_what_the_stream_captures() {
        let err = mirror("ORDERS", Some("bank"), &jetsource_stream(&["orders.>"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "stream ORDERS is not a jetsource event stream: it captures [\"orders.>\"], not \
             bank.> (check --prefix)"
        );
    }

    #[test]
    fn streams_without_direct_get_are_not_jetsource_streams() {
        let mut existing = jetsource_stream(&["orders.>"]);
        existing.allow_direct = false;
        let err = mirror("ORDERS", None, &existing).unwrap_err();
        assert!(err.to_string().contains("allow_direct"), "{err}");
    }
}
