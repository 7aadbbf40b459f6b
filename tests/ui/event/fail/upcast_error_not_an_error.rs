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

struct NoOwner;

fn upgrade(old: OpenedV1) -> Result<Opened, NoOwner> {
    if old.owner.is_empty() {
        return Err(NoOwner);
    }
    Ok(Opened { owner: old.owner })
}

fn main() {}
