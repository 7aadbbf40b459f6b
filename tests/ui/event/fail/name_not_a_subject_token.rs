#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
#[event(name = "account.opened", version = 1)]
struct Opened {
    owner: String,
}

fn main() {}
