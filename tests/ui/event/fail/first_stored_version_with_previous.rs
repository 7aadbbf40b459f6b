#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
#[event(name = "opened", version = 1)]
struct OpenedV1 {
    owner: String,
}

#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
#[event(name = "opened", version = 2, previous = OpenedV1, first_stored_version = 2)]
struct Opened {
    owner: String,
}

impl From<OpenedV1> for Opened {
    fn from(old: OpenedV1) -> Self {
        Opened { owner: old.owner }
    }
}

fn main() {}
