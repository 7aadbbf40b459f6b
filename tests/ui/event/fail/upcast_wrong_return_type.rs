#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
#[event(name = "opened", version = 1)]
struct OpenedV1 {
    owner: String,
}

#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
#[event(name = "opened", version = 2, previous = OpenedV1, upcast = upgrade)]
struct Opened {
    owner: String,
}

fn upgrade(old: OpenedV1) -> Option<Opened> {
    Some(Opened { owner: old.owner })
}

fn main() {}
