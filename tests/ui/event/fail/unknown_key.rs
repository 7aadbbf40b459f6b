#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
#[event(name = "opened", version = 1, stream = "accounts")]
struct Opened {
    owner: String,
}

fn main() {}
