use jetsource::{Aggregate, Apply, Event, EventSet};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "deposited", version = 1)]
struct Deposited {
    amount: u64,
}

#[derive(EventSet)]
enum AccountEvent {
    Deposited(Deposited),
}

#[derive(Aggregate, Default)]
#[aggregate(name = "account", events = AccountEvent)]
struct Account<T> {
    balance: u64,
    tag: T,
}

impl<T> Apply<Deposited> for Account<T> {
    fn apply(&mut self, event: Deposited) {
        self.balance += event.amount;
    }
}

fn main() {}
