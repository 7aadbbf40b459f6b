use jetsource::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "opened", version = 1)]
struct Opened {
    owner: String,
}

struct Balances;

#[jetsource::subscriber(durable = "balances")]
struct Totals;

fn main() {}
