use jetsource::{Event, EventSet};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "opened", version = 1)]
struct Opened {
    owner: String,
}

#[derive(EventSet)]
#[event_set(retired("note added"))]
enum AccountEvent {
    Opened(Opened),
}

fn main() {}
