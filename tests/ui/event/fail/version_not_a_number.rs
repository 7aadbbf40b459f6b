#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
#[event(name = "opened", version = "2")]
struct Opened {
    owner: String,
}

fn main() {}
