//! Reading events back through batched direct get: no consumer is created, so nothing is left
//! behind on the server, and one request returns up to [`BATCH`] events.

use std::time::Duration;

use futures::StreamExt;

use super::error::JetStreamError;
use super::headers;
use crate::store::{StoreError, StoredEvent};

/// Events asked for per direct-get request.
pub(crate) const BATCH: usize = 1000;

/// Where and how to read.
pub(crate) struct Reader<'a> {
    pub client: &'a async_nats::Client,
    pub stream: &'a str,
    /// Length of the subject prefix, to cut it from subjects.
    pub prefix_len: usize,
    pub timeout: Duration,
}

/// One page of a batched direct get.
struct Page {
    events: Vec<StoredEvent>,
    /// Stream sequence of the last message read.
    last_seq: u64,
    /// Matching messages after the last one read.
    pending: u64,
}

/// Reads the events whose subject matches `filter`, from stream sequence `start_seq` on, until
/// `limit` events are read or none are left. `keep` drops events the caller does not want
/// (they still count toward nothing).
pub(crate) async fn read(
    reader: &Reader<'_>,
    filter: &str,
    start_seq: u64,
    limit: usize,
    keep: impl Fn(&StoredEvent) -> bool,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut events = Vec::new();
    let mut seq = start_seq.max(1);
    while events.len() < limit {
        let want = (limit - events.len()).min(BATCH);
        let page = page(reader, filter, seq, want).await?;
        let received = page.events.len();
        events.extend(page.events.into_iter().filter(|e| keep(e)));
        if received == 0 || page.pending == 0 {
            break;
        }
        seq = page.last_seq + 1;
    }
    Ok(events)
}

async fn page(
    reader: &Reader<'_>,
    filter: &str,
    seq: u64,
    batch: usize,
) -> Result<Page, StoreError> {
    let Reader {
        client,
        stream,
        prefix_len,
        timeout,
    } = *reader;
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(JetStreamError::from)?;
    let request = serde_json::json!({ "seq": seq, "batch": batch, "next_by_subj": filter });
    client
        .publish_with_reply(
            format!("$JS.API.DIRECT.GET.{stream}"),
            inbox,
            request.to_string().into(),
        )
        .await
        .map_err(JetStreamError::from)?;
    let mut out = Page {
        events: Vec::with_capacity(batch.min(64)),
        last_seq: seq,
        pending: 0,
    };
    loop {
        let message = match tokio::time::timeout(timeout, replies.next()).await {
            Err(_) => return Err(JetStreamError::Timeout.into()),
            Ok(None) => {
                return Err(JetStreamError::Client("subscription closed".into()).into());
            }
            Ok(Some(message)) => message,
        };
        if let Some(status) = message.status {
            match status.as_u16() {
                // End of batch.
                204 => return Ok(out),
                // Nothing matches from `seq` on.
                404 => return Ok(out),
                503 => {
                    return Err(JetStreamError::NoResponders(format!(
                        "direct get on stream {stream}"
                    ))
                    .into())
                }
                200 => {}
                code => {
                    return Err(JetStreamError::Api {
                        code,
                        err_code: 0,
                        description: message.description.unwrap_or_default(),
                    }
                    .into())
                }
            }
        }
        let Some(hdrs) = message.headers.as_ref() else {
            return Err(JetStreamError::Protocol("direct get reply without headers".into()).into());
        };
        let header = |name: &str| hdrs.get(name).map(|v| v.as_str().to_owned());
        let position = header("Nats-Sequence")
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| JetStreamError::Protocol("reply lacks Nats-Sequence".into()))?;
        let subject = header("Nats-Subject")
            .ok_or_else(|| JetStreamError::Protocol("reply lacks Nats-Subject".into()))?;
        out.pending = header("Nats-Num-Pending")
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        out.last_seq = position;
        let rest = subject.get(prefix_len + 1..).unwrap_or("");
        out.events
            .push(headers::decode(rest, position, hdrs, message.payload)?);
    }
}
