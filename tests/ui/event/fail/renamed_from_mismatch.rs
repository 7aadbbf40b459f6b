#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
#[event(name = "created", version = 1)]
struct CreatedV1 {
    owner: String,
}

#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
#[event(name = "opened", version = 2, previous = CreatedV1, renamed_from = "made")]
struct Opened {
    owner: String,
}

impl From<CreatedV1> for Opened {
    fn from(old: CreatedV1) -> Self {
        Opened { owner: old.owner }
    }
}

fn main() {}
