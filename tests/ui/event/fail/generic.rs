#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
#[event(name = "opened", version = 1)]
struct Opened<T> {
    owner: T,
}

fn main() {}
