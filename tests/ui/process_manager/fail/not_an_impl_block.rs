use serde::{Deserialize, Serialize};

#[jetsource::process_manager(name = "fulfilment", correlate = order_id)]
#[derive(Default, Serialize, Deserialize)]
struct Fulfilment;

fn main() {}
