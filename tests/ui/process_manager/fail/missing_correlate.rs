use jetsource::process_manager::ProcessContext;
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

#[derive(Event, Serialize, Deserialize)]
#[event(name = "payment_received", version = 1)]
struct PaymentReceived {
    order_id: String,
}

#[jetsource::process_manager(name = "fulfilment")]
impl Fulfilment {
    #[start]
    async fn on_placed(
        &mut self,
        _: OrderPlaced,
        _: &mut ProcessContext,
    ) -> Result<(), HandlerError> {
        Ok(())
    }

    async fn on_paid(
        &mut self,
        _: PaymentReceived,
        _: &mut ProcessContext,
    ) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn main() {}
