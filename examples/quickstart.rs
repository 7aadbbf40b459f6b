//! A bank account on the embedded in-memory store: events with an upcast, an aggregate,
//! commands with domain errors, an idempotent retry and a concurrency conflict.
//!
//! Run it with `cargo run --example quickstart`.

use jetsource::{
    Aggregate, Apply, Codec, CommandMetadata, Event, EventSet, EventStore, ExecuteError,
    InMemoryStore, Repository,
};
use serde::{Deserialize, Serialize};

// ANCHOR: events
/// Version 2 of `opened` added the currency; stored version-1 events are upcast on read.
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "opened", version = 2, previous = OpenedV1)]
pub struct Opened {
    pub owner: String,
    pub currency: String,
}

/// Kept only to read events written before the currency existed.
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "opened", version = 1)]
pub struct OpenedV1 {
    pub owner: String,
}

impl From<OpenedV1> for Opened {
    fn from(old: OpenedV1) -> Self {
        Opened {
            owner: old.owner,
            currency: "EUR".to_owned(),
        }
    }
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "deposited", version = 1)]
pub struct Deposited {
    pub amount: u64,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "withdrawn", version = 1)]
pub struct Withdrawn {
    pub amount: u64,
}
// ANCHOR_END: events

// ANCHOR: aggregate
#[derive(EventSet, Debug, Clone, PartialEq)]
pub enum AccountEvent {
    Opened(Opened),
    Deposited(Deposited),
    Withdrawn(Withdrawn),
}

#[derive(Aggregate, Default, Debug, Clone)]
#[aggregate(name = "account", events = AccountEvent)]
pub struct Account {
    pub owner: Option<String>,
    pub currency: String,
    pub balance: u64,
}

impl Apply<Opened> for Account {
    fn apply(&mut self, event: Opened) {
        self.owner = Some(event.owner);
        self.currency = event.currency;
    }
}

impl Apply<Deposited> for Account {
    fn apply(&mut self, event: Deposited) {
        self.balance += event.amount;
    }
}

impl Apply<Withdrawn> for Account {
    fn apply(&mut self, event: Withdrawn) {
        self.balance -= event.amount;
    }
}
// ANCHOR_END: aggregate

// ANCHOR: commands
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AccountError {
    #[error("the account is already open")]
    AlreadyOpen,
    #[error("the account is not open")]
    NotOpen,
    #[error("insufficient funds: balance {balance}, requested {requested}")]
    InsufficientFunds { balance: u64, requested: u64 },
}

impl Account {
    pub fn open(&self, owner: &str, currency: &str) -> Result<Vec<AccountEvent>, AccountError> {
        if self.owner.is_some() {
            return Err(AccountError::AlreadyOpen);
        }
        Ok(vec![Opened {
            owner: owner.to_owned(),
            currency: currency.to_owned(),
        }
        .into()])
    }

    pub fn deposit(&self, amount: u64) -> Result<Vec<AccountEvent>, AccountError> {
        self.owner.as_ref().ok_or(AccountError::NotOpen)?;
        Ok(vec![Deposited { amount }.into()])
    }

    pub fn withdraw(&self, amount: u64) -> Result<Vec<AccountEvent>, AccountError> {
        self.owner.as_ref().ok_or(AccountError::NotOpen)?;
        if amount > self.balance {
            return Err(AccountError::InsufficientFunds {
                balance: self.balance,
                requested: amount,
            });
        }
        Ok(vec![Withdrawn { amount }.into()])
    }
}
// ANCHOR_END: commands

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // ANCHOR: repository
    let store = InMemoryStore::new();
    let accounts = Repository::<Account, _>::new(store.clone());

    accounts.execute("acc-1", |a| a.open("Ada", "GBP")).await?;
    accounts.execute("acc-1", |a| a.deposit(100)).await?;
    let after = accounts.execute("acc-1", |a| a.withdraw(30)).await?;
    println!(
        "acc-1: owner {:?}, balance {} {} at version {}",
        after.state.owner, after.state.balance, after.state.currency, after.version
    );
    // ANCHOR_END: repository

    // ANCHOR: domain_error
    match accounts.execute("acc-1", |a| a.withdraw(1_000)).await {
        Err(ExecuteError::Rejected(error)) => println!("rejected as expected: {error}"),
        other => return Err(format!("expected a rejection, got {other:?}").into()),
    }
    // ANCHOR_END: domain_error

    // ANCHOR: idempotent
    let meta = CommandMetadata::default()
        .command_id("deposit-2026-11-26-0001")
        .correlation_id("http-request-42");
    let first = accounts
        .execute_with("acc-1", meta.clone(), |a| a.deposit(5))
        .await?;
    let retry = accounts
        .execute_with("acc-1", meta, |a| a.deposit(5))
        .await?;
    println!(
        "deposit with a command id: first appended {}, retry appended {} (duplicate: {}), balance {}",
        first.appended, retry.appended, retry.duplicate, retry.state.balance
    );
    // ANCHOR_END: idempotent

    // ANCHOR: upcast
    // An account opened years ago, by code that only knew `opened` version 1.
    let legacy = OpenedV1 {
        owner: "Grace".to_owned(),
    };
    let old_event = jetsource::NewEvent {
        id: uuid::Uuid::now_v7(),
        name: OpenedV1::NAME,
        version: OpenedV1::VERSION,
        codec: Codec::Json,
        payload: legacy.encode_payload()?.into(),
        timestamp: std::time::SystemTime::now(),
        correlation_id: "migration".to_owned(),
        causation_id: None,
        headers: Default::default(),
    };
    let key = jetsource::AggregateKey::new(Account::TYPE, jetsource::AggregateId::new("acc-0")?);
    store
        .append(
            &key,
            jetsource::ExpectedVersion::Exact(0),
            None,
            vec![old_event],
        )
        .await?;
    let legacy_account = accounts.load("acc-0").await?;
    println!(
        "acc-0 was stored as `opened` v1 and reads as v2: owner {:?}, currency {} (the upcast default)",
        legacy_account.state.owner, legacy_account.state.currency
    );
    // ANCHOR_END: upcast

    // ANCHOR: invalid_id
    match accounts.execute("acc.*", |a| a.deposit(1)).await {
        Err(error) => println!("unsafe id rejected before anything is stored: {error}"),
        Ok(_) => return Err("an unsafe id was accepted".into()),
    }
    // ANCHOR_END: invalid_id

    println!("the store holds {} events", store.len());
    for event in store.read_all(1, 100).await? {
        println!(
            "  #{} {}/{} seq {} {} v{} correlation {}",
            event.position,
            event.aggregate_type,
            event.aggregate_id,
            event.sequence,
            event.name,
            event.version,
            event.correlation_id
        );
    }
    Ok(())
}
