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

#[derive(Aggregate, Default, Serialize, Deserialize)]
#[aggregate(name = "account", events = AccountEvent, snapshot(schema = 1))]
struct Account {
    balance: u64,
}

impl Apply<Deposited> for Account {
    fn apply(&mut self, event: Deposited) {
        self.balance += event.amount;
    }
}

fn main() {}
