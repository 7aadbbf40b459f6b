#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
#[event(name = "opened", version = 1)]
struct OpenedV1 {
    owner: String,
}

#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
#[event(name = "opened", version = 2, previous = OpenedV1)]
struct Opened {
    owner: String,
    currency: String,
}

fn main() {}
