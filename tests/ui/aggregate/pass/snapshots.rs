use jetsource::{Aggregate, Apply, Event, EventSet, SnapshotPolicy};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "deposited", version = 1)]
struct Deposited {
    amount: u64,
}

#[derive(EventSet)]
enum AccountEvent {
    Deposited(Deposited),
}

// ANCHOR: aggregate_attrs
#[derive(Aggregate, Default, Serialize, Deserialize, Debug, PartialEq)]
#[aggregate(name = "account", events = AccountEvent, snapshot(schema = 2, every = 100))]
struct Account {
    balance: u64,
}
// ANCHOR_END: aggregate_attrs

impl Apply<Deposited> for Account {
    fn apply(&mut self, event: Deposited) {
        self.balance += event.amount;
    }
}

/// An enum is a fine aggregate too: a state machine.
#[derive(Aggregate, Default)]
#[aggregate(name = "door", events = AccountEvent)]
enum Door {
    #[default]
    Closed,
    Open,
}

impl Apply<Deposited> for Door {
    fn apply(&mut self, _: Deposited) {
        *self = Door::Open;
    }
}

fn main() {
    assert_eq!(Account::TYPE, "account");
    assert_eq!(
        Account::SNAPSHOT,
        Some(SnapshotPolicy {
            schema_version: 2,
            every: 100
        })
    );
    let mut account = Account::default();
    account.apply_event(AccountEvent::Deposited(Deposited { amount: 7 }));
    let bytes = account.encode_snapshot().unwrap().unwrap();
    assert_eq!(
        Account::decode_snapshot(&bytes).unwrap().unwrap(),
        Account { balance: 7 }
    );

    assert_eq!(Door::SNAPSHOT, None);
    assert!(Door::default().encode_snapshot().is_none());
    let mut door = Door::default();
    door.apply_event(Deposited { amount: 1 }.into());
    assert!(matches!(door, Door::Open));
}
