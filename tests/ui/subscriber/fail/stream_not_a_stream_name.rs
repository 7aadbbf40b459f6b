use jetsource::subscriber::{EventContext, HandlerError};
use jetsource::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "opened", version = 1)]
struct Opened {
    owner: String,
}

struct Balances;

#[jetsource::subscriber(durable = "balances", stream = "bank.events")]
impl Balances {
    async fn on_opened(&self, _: Opened, _: &EventContext) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn main() {}
