//! `jetsource streams`: every stream, and per stream its consumers with their lag.

use std::io::Write;

use async_nats::jetstream::stream;
use futures::TryStreamExt;

use super::Session;
use crate::error::CliError;
use crate::store::get_stream;

/// Lists streams by name, each followed by its consumers.
pub async fn run(session: &Session, out: &mut impl Write) -> Result<(), CliError> {
    let js = session.jetstream();
    let mut infos: Vec<stream::Info> = js
        .streams()
        .try_collect()
        .await
        .map_err(|e| CliError::request("listing streams", &e))?;
    if infos.is_empty() {
        writeln!(out, "no streams")?;
        return Ok(());
    }
    infos.sort_by(|a, b| a.config.name.cmp(&b.config.name));
    for info in infos {
        let config = &info.config;
        writeln!(
            out,
            "stream {}  subjects={}  messages={}  bytes={}  storage={}  replicas={}",
            config.name,
            config.subjects.join(","),
            info.state.messages,
            info.state.bytes,
            storage_name(config.storage),
            config.num_replicas,
        )?;
        let handle = get_stream(&js, &config.name).await?;
        let mut consumers: Vec<_> =
            handle.consumers().try_collect().await.map_err(|e| {
                CliError::request(format!("listing consumers of {}", config.name), &e)
            })?;
        consumers.sort_by(|a, b| a.name.cmp(&b.name));
        if consumers.is_empty() {
            writeln!(out, "  no consumers")?;
        }
        for consumer in consumers {
            let filter = if consumer.config.filter_subjects.is_empty() {
                consumer.config.filter_subject.clone()
            } else {
                consumer.config.filter_subjects.join(",")
            };
            // `lag`: stored messages the consumer has not been given yet; `ack_pending`: given
            // but not acknowledged.
            writeln!(
                out,
                "  consumer {}  lag={}  ack_pending={}  redelivered={}  filter={}",
                consumer.name,
                consumer.num_pending,
                consumer.num_ack_pending,
                consumer.num_redelivered,
                if filter.is_empty() { "-" } else { &filter },
            )?;
        }
    }
    Ok(())
}

fn storage_name(storage: stream::StorageType) -> &'static str {
    match storage {
        stream::StorageType::File => "file",
        stream::StorageType::Memory => "memory",
    }
}
