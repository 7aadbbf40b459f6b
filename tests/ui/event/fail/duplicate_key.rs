#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
#[event(name = "opened", version = 1)]
#[event(name = "created")]
struct Opened {
    owner: String,
}

fn main() {}
