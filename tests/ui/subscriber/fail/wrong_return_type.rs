use jetsource::subscriber::EventContext;
use jetsource::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "opened", version = 1)]
struct Opened {
    owner: String,
}

struct Balances;

#[jetsource::subscriber(durable = "balances")]
impl Balances {
    async fn on_opened(&self, _: Opened, _: &EventContext) -> Result<(), String> {
        Ok(())
    }
}

fn main() {}
