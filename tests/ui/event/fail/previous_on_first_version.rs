#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
#[event(name = "opened", version = 1, previous = Draft)]
struct Opened {
    owner: String,
}

struct Draft;

fn main() {}
