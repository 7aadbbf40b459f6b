// A version above 1 must say how the older stored versions are read.
#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
#[event(name = "opened", version = 2)]
struct Opened {
    owner: String,
}

fn main() {}
