// The event moved on to version 3, but `first_stored_version` still says 2: version 2 events
// were stored, and nothing would read them.
#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
#[event(name = "opened", version = 3, first_stored_version = 2)]
struct Opened {
    owner: String,
}

fn main() {}
