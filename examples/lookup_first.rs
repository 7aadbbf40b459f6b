//! Look it up first, then decide: async lookups before a command.
//!
//! A command is a synchronous closure from the state to the events, and the repository runs it
//! again after a concurrency conflict, so it must not wait on I/O. The application looks the
//! value up first, hands it to the command, and the event records it. Two lookups: a price from
//! a price service, and a username from a uniqueness registry.
//!
//! Run it with `cargo run --example lookup_first`; `cargo test --example lookup_first` runs its
//! tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jetsource::{
    Aggregate, Apply, Committed, Event, EventSet, EventStore, ExecuteError, InMemoryStore,
    Repository,
};
use serde::{Deserialize, Serialize};

// ANCHOR: cart
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "item_added", version = 1)]
pub struct ItemAdded {
    pub sku: String,
    pub quantity: u32,
    /// The price the customer was shown. Stored in the event, so replaying the cart never asks
    /// the price service again and a later price change does not rewrite the past.
    pub unit_price_cents: u64,
}

#[derive(EventSet, Debug, Clone, PartialEq)]
pub enum CartEvent {
    ItemAdded(ItemAdded),
}

#[derive(Aggregate, Default, Debug, Clone)]
#[aggregate(name = "cart", events = CartEvent)]
pub struct Cart {
    pub lines: Vec<ItemAdded>,
}

impl Apply<ItemAdded> for Cart {
    fn apply(&mut self, event: ItemAdded) {
        self.lines.push(event);
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CartError {
    #[error("a quantity of zero adds nothing")]
    ZeroQuantity,
}

impl Cart {
    pub fn total_cents(&self) -> u64 {
        self.lines
            .iter()
            .map(|line| u64::from(line.quantity) * line.unit_price_cents)
            .sum()
    }

    /// Pure, like every command: the price comes in as a value, never from a call.
    pub fn add_item(
        &self,
        sku: &str,
        quantity: u32,
        unit_price_cents: u64,
    ) -> Result<Vec<CartEvent>, CartError> {
        if quantity == 0 {
            return Err(CartError::ZeroQuantity);
        }
        Ok(vec![ItemAdded {
            sku: sku.to_owned(),
            quantity,
            unit_price_cents,
        }
        .into()])
    }
}
// ANCHOR_END: cart

// ANCHOR: price_service
/// Stands in for a remote price service (an HTTP call in a real application).
#[derive(Clone, Default)]
pub struct PriceService {
    prices: Arc<Mutex<HashMap<String, u64>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("no price for {sku}")]
    UnknownSku { sku: String },
}

impl PriceService {
    pub fn set_price(&self, sku: &str, cents: u64) {
        self.prices
            .lock()
            .expect("price list poisoned")
            .insert(sku.to_owned(), cents);
    }

    pub async fn price_of(&self, sku: &str) -> Result<u64, LookupError> {
        // A real service answers later; yielding keeps the call honestly asynchronous.
        tokio::task::yield_now().await;
        let prices = self.prices.lock().expect("price list poisoned");
        prices
            .get(sku)
            .copied()
            .ok_or_else(|| LookupError::UnknownSku {
                sku: sku.to_owned(),
            })
    }
}
// ANCHOR_END: price_service

// ANCHOR: add_item
#[derive(Debug, thiserror::Error)]
pub enum AddItemError {
    #[error("looking up the price failed")]
    Lookup(#[source] LookupError),
    #[error("adding the item to the cart failed")]
    Execute(#[source] ExecuteError<CartError>),
}

pub async fn add_item<S: EventStore>(
    carts: &Repository<Cart, S>,
    prices: &PriceService,
    cart_id: &str,
    sku: &str,
    quantity: u32,
) -> Result<Committed<Cart>, AddItemError> {
    // First the lookup, outside the command: it may be slow or fail, and a command that
    // conflicts runs again, which must not mean a second call.
    let unit_price_cents = prices.price_of(sku).await.map_err(AddItemError::Lookup)?;
    // Then the decision, with the looked-up value in it.
    carts
        .execute(cart_id, |cart| {
            cart.add_item(sku, quantity, unit_price_cents)
        })
        .await
        .map_err(AddItemError::Execute)
}
// ANCHOR_END: add_item

// ANCHOR: registry
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "username_claimed", version = 1)]
pub struct UsernameClaimed {
    pub user_id: String,
}

#[derive(EventSet, Debug, Clone, PartialEq)]
pub enum UsernameEvent {
    Claimed(UsernameClaimed),
}

/// The uniqueness registry: one aggregate per username, whose id is the name. Two users
/// claiming it are two commands on one aggregate, and the store's optimistic concurrency lets
/// only the first append; a read model saying "free" could tell both.
#[derive(Aggregate, Default, Debug, Clone)]
#[aggregate(name = "username", events = UsernameEvent)]
pub struct Username {
    pub owner: Option<String>,
}

impl Apply<UsernameClaimed> for Username {
    fn apply(&mut self, event: UsernameClaimed) {
        self.owner = Some(event.user_id);
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UsernameError {
    #[error("the username belongs to {owner}")]
    Taken { owner: String },
}

impl Username {
    pub fn claim(&self, user_id: &str) -> Result<Vec<UsernameEvent>, UsernameError> {
        match &self.owner {
            None => Ok(vec![UsernameClaimed {
                user_id: user_id.to_owned(),
            }
            .into()]),
            // The same user again (a retried sign-up): already theirs, nothing to append.
            Some(owner) if owner == user_id => Ok(vec![]),
            Some(owner) => Err(UsernameError::Taken {
                owner: owner.clone(),
            }),
        }
    }
}
// ANCHOR_END: registry

// ANCHOR: user
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "registered", version = 1)]
pub struct Registered {
    pub username: String,
}

#[derive(EventSet, Debug, Clone, PartialEq)]
pub enum UserEvent {
    Registered(Registered),
}

#[derive(Aggregate, Default, Debug, Clone)]
#[aggregate(name = "user", events = UserEvent)]
pub struct User {
    pub username: Option<String>,
}

impl Apply<Registered> for User {
    fn apply(&mut self, event: Registered) {
        self.username = Some(event.username);
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UserError {
    #[error("the user is already registered as {username}")]
    AlreadyRegistered { username: String },
}

impl User {
    pub fn register(&self, username: &str) -> Result<Vec<UserEvent>, UserError> {
        match &self.username {
            None => Ok(vec![Registered {
                username: username.to_owned(),
            }
            .into()]),
            Some(same) if same == username => Ok(vec![]),
            Some(other) => Err(UserError::AlreadyRegistered {
                username: other.clone(),
            }),
        }
    }
}
// ANCHOR_END: user

// ANCHOR: sign_up
#[derive(Debug, thiserror::Error)]
pub enum SignUpError {
    #[error("claiming the username failed")]
    Claim(#[source] ExecuteError<UsernameError>),
    #[error("registering the user failed")]
    Register(#[source] ExecuteError<UserError>),
}

pub async fn sign_up<S: EventStore>(
    usernames: &Repository<Username, S>,
    users: &Repository<User, S>,
    user_id: &str,
    username: &str,
) -> Result<Committed<User>, SignUpError> {
    // First the registry. Both commands are idempotent, so a sign-up interrupted between them
    // completes when it is retried.
    usernames
        .execute(username, |name| name.claim(user_id))
        .await
        .map_err(SignUpError::Claim)?;
    // Then the user, with the name the registry gave it.
    users
        .execute(user_id, |user| user.register(username))
        .await
        .map_err(SignUpError::Register)
}
// ANCHOR_END: sign_up

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = InMemoryStore::new();
    let carts = Repository::<Cart, _>::new(store.clone());
    let prices = PriceService::default();

    prices.set_price("tea", 450);
    add_item(&carts, &prices, "cart-1", "tea", 2).await?;
    prices.set_price("tea", 500);
    let cart = add_item(&carts, &prices, "cart-1", "tea", 1).await?;
    println!(
        "cart-1: {} lines, total {} cents (two teas at the old price, one at the new)",
        cart.state.lines.len(),
        cart.state.total_cents()
    );
    if cart.state.total_cents() != 2 * 450 + 500 {
        return Err("the cart's total does not use the prices looked up".into());
    }
    match add_item(&carts, &prices, "cart-1", "coffee", 1).await {
        Err(AddItemError::Lookup(error)) => println!("no command without a price: {error}"),
        other => return Err(format!("expected a failed lookup, got {other:?}").into()),
    }

    let usernames = Repository::<Username, _>::new(store.clone());
    let users = Repository::<User, _>::new(store.clone());
    sign_up(&usernames, &users, "user-1", "ada").await?;
    match sign_up(&usernames, &users, "user-2", "ada").await {
        Err(SignUpError::Claim(ExecuteError::Rejected(error))) => {
            println!("user-2 cannot sign up as ada: {error}")
        }
        other => return Err(format!("expected the name to be taken, got {other:?}").into()),
    }
    let user = sign_up(&usernames, &users, "user-2", "grace").await?;
    println!("user-2 signed up as {:?}", user.state.username);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_event_keeps_the_price_that_was_looked_up() {
        let carts = Repository::<Cart, _>::new(InMemoryStore::new());
        let prices = PriceService::default();
        prices.set_price("tea", 450);
        add_item(&carts, &prices, "cart-1", "tea", 2).await.unwrap();

        prices.set_price("tea", 500);
        let replayed = carts.load("cart-1").await.unwrap();
        assert_eq!(replayed.state.total_cents(), 900);

        let cart = add_item(&carts, &prices, "cart-1", "tea", 1).await.unwrap();
        assert_eq!(cart.state.lines[1].unit_price_cents, 500);
        assert_eq!(cart.state.total_cents(), 1_400);
    }

    #[tokio::test]
    async fn a_failed_lookup_runs_no_command() {
        let store = InMemoryStore::new();
        let carts = Repository::<Cart, _>::new(store.clone());
        let error = add_item(&carts, &PriceService::default(), "cart-1", "tea", 1)
            .await
            .unwrap_err();
        assert!(matches!(
            error,
            AddItemError::Lookup(LookupError::UnknownSku { ref sku }) if sku == "tea"
        ));
        assert_eq!(store.len(), 0);
    }

    #[tokio::test]
    async fn a_taken_username_registers_nobody() {
        let store = InMemoryStore::new();
        let usernames = Repository::<Username, _>::new(store.clone());
        let users = Repository::<User, _>::new(store.clone());
        sign_up(&usernames, &users, "user-1", "ada").await.unwrap();

        let error = sign_up(&usernames, &users, "user-2", "ada")
            .await
            .unwrap_err();
        assert!(matches!(
            error,
            SignUpError::Claim(ExecuteError::Rejected(UsernameError::Taken { ref owner }))
                if owner == "user-1"
        ));
        let loser = users.load("user-2").await.unwrap();
        assert_eq!(loser.version, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_two_concurrent_sign_ups_for_one_name_exactly_one_wins() {
        let store = InMemoryStore::new();
        let usernames = Repository::<Username, _>::new(store.clone());
        let users = Repository::<User, _>::new(store.clone());
        let (first, second) = tokio::join!(
            sign_up(&usernames, &users, "user-1", "ada"),
            sign_up(&usernames, &users, "user-2", "ada"),
        );
        let winners = [first.is_ok(), second.is_ok()];
        assert_eq!(winners.iter().filter(|won| **won).count(), 1);
        let owner = usernames.load("ada").await.unwrap().state.owner.unwrap();
        let winner = if winners[0] { "user-1" } else { "user-2" };
        assert_eq!(owner, winner);
    }

    #[tokio::test]
    async fn a_sign_up_interrupted_after_its_claim_completes_when_retried() {
        let store = InMemoryStore::new();
        let usernames = Repository::<Username, _>::new(store.clone());
        let users = Repository::<User, _>::new(store.clone());
        // The first attempt claimed the name and stopped before registering.
        usernames
            .execute("ada", |name| name.claim("user-1"))
            .await
            .unwrap();

        let user = sign_up(&usernames, &users, "user-1", "ada").await.unwrap();
        assert_eq!(user.state.username.as_deref(), Some("ada"));
        assert_eq!(usernames.load("ada").await.unwrap().version, 1);
    }
}
