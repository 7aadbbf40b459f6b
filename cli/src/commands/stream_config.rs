//! `jetsource stream-config show|create`: the runtime's [`StreamConfig`] as JSON, and the
//! stream created from it.

use std::io::Write;
use std::time::Duration;

use async_nats::jetstream::stream;
use jetsource::{JetStreamStorage, JetStreamStore, StreamConfig};
use serde_json::{json, Value};

use super::Session;
use crate::args::{CreateArgs, StreamSettings};
use crate::error::{check_prefix, CliError};
use crate::render;

/// Prints the configuration the runtime would create for these settings.
pub fn show(settings: &StreamSettings, out: &mut impl Write) -> Result<(), CliError> {
    let config = checked(settings)?;
    print_json(&view_of_config(&config), out)
}

/// Creates the stream and snapshot bucket through the runtime, then prints what the server
/// holds, in the shape `show` prints.
pub async fn create(
    session: &Session,
    args: &CreateArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let config = checked(&args.settings)?.update_existing(args.update_existing);
    let store =
        JetStreamStore::with_client(session.client.clone(), config, session.request_timeout)
            .await
            .map_err(|e| {
                CliError::from_store(&format!("creating stream {}", args.settings.name), e)
            })?;
    let config = store.config();
    let mut handle = crate::store::get_stream(&session.jetstream(), &config.name).await?;
    let on_server = handle
        .info()
        .await
        .map_err(|e| CliError::request(format!("reading stream {}", config.name), &e))?
        .config
        .clone();
    print_json(&view_of_server(&on_server, &config.snapshot_bucket), out)
}

fn checked(settings: &StreamSettings) -> Result<StreamConfig, CliError> {
    check_prefix(&settings.prefix)?;
    let config = settings.to_config();
    config
        .validate()
        .map_err(|e| CliError::InvalidStreamConfig(strip_runtime_prefix(&e.to_string())))?;
    Ok(config)
}

/// The runtime's message starts with "invalid JetStream store configuration: ", which the
/// CLI's own wording already says.
fn strip_runtime_prefix(message: &str) -> String {
    message
        .split_once(": ")
        .map_or(message, |(_, reason)| reason)
        .to_owned()
}

fn print_json(value: &Value, out: &mut impl Write) -> Result<(), CliError> {
    // A `Value` always serializes.
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    writeln!(out, "{text}")?;
    Ok(())
}

/// The settings that make a jetsource stream, one shape for both sources.
struct View<'a> {
    name: &'a str,
    subjects: &'a [String],
    storage: &'static str,
    replicas: usize,
    max_age: Duration,
    max_bytes: i64,
    max_message_size: i32,
    duplicate_window: Duration,
    allow_direct: bool,
    allow_atomic_publish: bool,
    snapshot_bucket: &'a str,
}

impl View<'_> {
    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "subjects": self.subjects,
            "storage": self.storage,
            "replicas": self.replicas,
            "max_age": render::duration(self.max_age),
            "max_bytes": self.max_bytes,
            "max_message_size": self.max_message_size,
            "duplicate_window": render::duration(self.duplicate_window),
            "allow_direct": self.allow_direct,
            "allow_atomic_publish": self.allow_atomic_publish,
            "snapshot_bucket": self.snapshot_bucket,
        })
    }
}

fn view_of_config(config: &StreamConfig) -> Value {
    let subjects = [config.subject_filter()];
    View {
        name: &config.name,
        subjects: &subjects,
        storage: match config.storage {
            JetStreamStorage::File => "file",
            JetStreamStorage::Memory => "memory",
        },
        replicas: config.replicas,
        max_age: config.max_age,
        max_bytes: config.max_bytes,
        max_message_size: config.max_message_size,
        duplicate_window: config.duplicate_window,
        allow_direct: config.allow_direct,
        allow_atomic_publish: config.allow_atomic_publish,
        snapshot_bucket: &config.snapshot_bucket,
    }
    .to_json()
}

fn view_of_server(config: &stream::Config, snapshot_bucket: &str) -> Value {
    View {
        name: &config.name,
        subjects: &config.subjects,
        storage: match config.storage {
            stream::StorageType::File => "file",
            stream::StorageType::Memory => "memory",
        },
        replicas: config.num_replicas,
        max_age: config.max_age,
        max_bytes: config.max_bytes,
        max_message_size: config.max_message_size,
        duplicate_window: config.duplicate_window,
        allow_direct: config.allow_direct,
        allow_atomic_publish: config.allow_atomic_publish,
        snapshot_bucket,
    }
    .to_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_is_shown_with_the_runtime_defaults() {
        let value = view_of_config(&StreamConfig::new("ORDERS", "orders"));
        assert_eq!(
            value,
            json!({
                "name": "ORDERS",
                "subjects": ["orders.>"],
                "storage": "file",
                "replicas": 1,
                "max_age": "0s",
                "max_bytes": -1,
                "max_message_size": -1,
                "duplicate_window": "2m",
                "allow_direct": true,
                "allow_atomic_publish": true,
                "snapshot_bucket": "ORDERS_SNAPSHOTS",
            })
        );
    }

    #[test]
    fn the_runtime_prefix_is_stripped_from_validation_messages() {
        assert_eq!(
            strip_runtime_prefix(
                "invalid JetStream store configuration: replicas must be 1 to 5, not 9"
            ),
            "replicas must be 1 to 5, not 9"
        );
    }
}
