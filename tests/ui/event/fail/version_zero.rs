#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
#[event(name = "opened", version = 0)]
struct Opened {
    owner: String,
}

fn main() {}
