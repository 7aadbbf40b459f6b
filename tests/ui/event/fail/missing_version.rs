#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
#[event(name = "opened")]
struct Opened {
    owner: String,
}

fn main() {}
