#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
#[event(name = "opened", version = 2, upcast = upgrade)]
struct Opened {
    owner: String,
}

fn upgrade(owner: String) -> Opened {
    Opened { owner }
}

fn main() {}
