#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
struct Opened {
    owner: String,
}

fn main() {}
