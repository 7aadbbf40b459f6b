//! Given/when/then tests of the quickstart's bank account, as a user writes them.

#[allow(dead_code)]
#[path = "../examples/quickstart.rs"]
mod quickstart;

use jetsource::testing::AggregateFixture;
use quickstart::{Account, AccountError, Deposited, Opened, Withdrawn};

// ANCHOR: fixture
#[test]
fn withdrawing_within_the_balance_emits_withdrawn() {
    let account = AggregateFixture::<Account>::given([
        Opened {
            owner: "Ada".into(),
            currency: "GBP".into(),
        }
        .into(),
        Deposited { amount: 100 }.into(),
    ])
    .when(|account| account.withdraw(30))
    .then_expect_events([Withdrawn { amount: 30 }.into()]);
    assert_eq!(account.balance, 70);
}

#[test]
fn overdrawing_is_refused() {
    AggregateFixture::<Account>::given([
        Opened {
            owner: "Ada".into(),
            currency: "GBP".into(),
        }
        .into(),
        Deposited { amount: 10 }.into(),
    ])
    .when(|account| account.withdraw(11))
    .then_expect_error(AccountError::InsufficientFunds {
        balance: 10,
        requested: 11,
    });
}
// ANCHOR_END: fixture

#[test]
fn a_closed_account_takes_no_deposit() {
    AggregateFixture::<Account>::new()
        .when(|account| account.deposit(1))
        .then_expect_error(AccountError::NotOpen);
}
