#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
#[event(name = "opened", version = 1, codec = "xml")]
struct Opened {
    owner: String,
}

fn main() {}
