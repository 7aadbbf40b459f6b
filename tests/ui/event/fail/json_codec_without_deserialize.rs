// JSON (the default codec) needs serde both ways; this event can only be written.
#[derive(jetsource::Event, serde::Serialize)]
#[event(name = "opened", version = 1)]
struct Opened {
    owner: String,
}

fn main() {}
