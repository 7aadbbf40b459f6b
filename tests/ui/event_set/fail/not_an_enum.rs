use jetsource::{Event, EventSet};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "opened", version = 1)]
struct Opened {
    owner: String,
}

#[derive(EventSet)]
struct AccountEvent(Opened);

fn main() {}
