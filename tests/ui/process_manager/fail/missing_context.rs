use jetsource::subscriber::HandlerError;
use jetsource::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "order_placed", version = 1)]
struct OrderPlaced {
    order_id: String,
}

#[derive(Default, Serialize, Deserialize)]
struct Fulfilment;

#[jetsource::process_manager(name = "fulfilment", correlate = order_id)]
impl Fulfilment {
    #[start]
    async fn on_placed(&mut self, _: OrderPlaced) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn main() {}
