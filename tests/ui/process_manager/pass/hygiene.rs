//! The generated code names everything by absolute path: it compiles, without a single
//! warning, in a module where the prelude's names mean something else, for a process manager
//! with and without deadlines and rejection handlers.
#![deny(warnings)]

mod shadowed {
    #![allow(non_snake_case, non_upper_case_globals)]

    pub struct Result;
    pub struct Option;
    pub struct Vec;
    pub struct Box;
    pub struct String;
    pub fn Ok() {}
    pub fn Err() {}
    pub fn Some() {}
    pub const None: () = ();

    use jetsource::process_manager::{Command, ProcessContext, Rejected};
    use jetsource::subscriber::HandlerError;
    use jetsource::{Aggregate, Apply, Event, EventSet};

    #[derive(Event, serde::Serialize, serde::Deserialize)]
    #[event(name = "placed", version = 1)]
    pub struct Placed {
        pub order_id: ::std::string::String,
    }

    #[derive(Event, serde::Serialize, serde::Deserialize)]
    #[event(name = "paid", version = 1)]
    pub struct Paid(pub u64);

    #[derive(EventSet)]
    pub enum StockEvent {
        Placed(Placed),
    }

    #[derive(Aggregate, Default)]
    #[aggregate(name = "stock", events = StockEvent)]
    pub struct Stock;

    impl Apply<Placed> for Stock {
        fn apply(&mut self, _: Placed) {}
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    pub struct Reserve;

    impl Command for Reserve {
        const NAME: &'static str = "reserve";
        type Aggregate = Stock;
        type Rejection = ();

        fn decide(&self, _: &Stock) -> ::core::result::Result<::std::vec::Vec<StockEvent>, ()> {
            ::core::result::Result::Ok(::std::vec::Vec::new())
        }
    }

    pub fn order_of(paid: &Paid) -> u64 {
        paid.0
    }

    #[derive(Default, serde::Serialize, serde::Deserialize)]
    pub struct Fulfilment {
        pub steps: u32,
    }

    #[jetsource::process_manager(name = "fulfilment", correlate = order_id)]
    impl Fulfilment {
        #[start]
        async fn on_placed(
            &mut self,
            _: Placed,
            cx: &mut ProcessContext,
        ) -> ::core::result::Result<(), HandlerError> {
            self.steps += 1;
            cx.schedule("payment", ::core::time::Duration::from_secs(1));
            ::core::result::Result::Ok(())
        }

        #[correlate(with = order_of)]
        async fn on_paid(
            &mut self,
            _: Paid,
            cx: &mut ProcessContext,
        ) -> ::core::result::Result<(), HandlerError> {
            cx.cancel("payment");
            ::core::result::Result::Ok(())
        }

        #[deadline("payment")]
        async fn overdue(
            &mut self,
            cx: &mut ProcessContext,
        ) -> ::core::result::Result<(), HandlerError> {
            cx.complete();
            ::core::result::Result::Ok(())
        }

        #[rejected]
        async fn refused(
            &mut self,
            _: Rejected<Reserve>,
            _: &mut ProcessContext,
        ) -> ::core::result::Result<(), HandlerError> {
            ::core::result::Result::Ok(())
        }
    }

    /// Neither deadlines nor rejection handlers: their parameters go unused.
    #[derive(Default, serde::Serialize, serde::Deserialize)]
    pub struct Minimal;

    #[jetsource::process_manager(name = "minimal", correlate = 0)]
    impl Minimal {
        #[start]
        async fn on_paid(
            &mut self,
            _: Paid,
            _: &mut ProcessContext,
        ) -> ::core::result::Result<(), HandlerError> {
            ::core::result::Result::Ok(())
        }
    }

    /// Uses every shadow, so `deny(warnings)` also proves none of them is dead.
    pub fn shadows() -> (Result, Option, Vec, Box, String, (), (), (), ()) {
        (Result, Option, Vec, Box, String, Ok(), Err(), Some(), None)
    }
}

use jetsource::process_manager::ProcessManager;
use shadowed::{Fulfilment, Minimal, Paid, Placed};

fn main() {
    let _ = shadowed::shadows();
    let _ = Fulfilment::default().steps;
    let placed = <Fulfilment as ProcessManager>::Event::from(Placed {
        order_id: "o-1".into(),
    });
    assert_eq!(Fulfilment::correlate(&placed), "o-1");
    let paid = <Fulfilment as ProcessManager>::Event::from(Paid(7));
    assert_eq!(Fulfilment::correlate(&paid), "7");
    assert!(!Fulfilment::starts(&paid));
    let paid = <Minimal as ProcessManager>::Event::from(Paid(9));
    assert_eq!(Minimal::correlate(&paid), "9");
    assert_eq!(Minimal::DEADLINES, [""; 0]);
}
