#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
#[event(version = 1)]
struct Opened {
    owner: String,
}

fn main() {}
