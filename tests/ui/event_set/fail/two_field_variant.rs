use jetsource::{Event, EventSet};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "opened", version = 1)]
struct Opened {
    owner: String,
}

#[derive(EventSet)]
enum AccountEvent {
    Opened(Opened, u64),
}

fn main() {}
