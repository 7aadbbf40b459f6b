#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
#[event(name = "opened", version = 1)]
enum Opened {
    ByOwner(String),
}

fn main() {}
