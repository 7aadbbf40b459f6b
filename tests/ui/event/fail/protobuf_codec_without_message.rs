// Protobuf needs a `prost::Message`; serde derives do not make one.
#[derive(jetsource::Event, serde::Serialize, serde::Deserialize, Default)]
#[event(name = "opened", version = 1, codec = "protobuf")]
struct Opened {
    owner: String,
}

fn main() {}
