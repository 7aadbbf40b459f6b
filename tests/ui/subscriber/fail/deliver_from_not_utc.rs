use jetsource::subscriber::{EventContext, HandlerError};
use jetsource::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "opened", version = 1)]
struct Opened {
    owner: String,
}

struct Balances;

#[jetsource::subscriber(durable = "balances", deliver_from = "2026-01-31T08:00:00+01:00")]
impl Balances {
    async fn on_opened(&self, _: Opened, _: &EventContext) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn main() {}
