//! Commands through the repository on every store: a command id that already ran returns its
//! first outcome without running again, whenever it is retried; commands on one aggregate from
//! many tasks of one process never conflict; conflicts with other writers give up with an error
//! that says whether retrying is safe.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jetsource::projection::sqlx::PgPool;
use jetsource::testing::nats_server::NatsServer;
use jetsource::testing::postgres_server::PostgresServer;
use jetsource::{
    Aggregate, Apply, CommandMetadata, Event, EventSet, EventStore, ExecuteError, InMemoryStore,
    JetStreamStore, PgStore, Repository, RepositoryError,
};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "lent", version = 1)]
struct Lent {
    to: String,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "returned", version = 1)]
struct Returned;

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "noted", version = 1)]
struct Noted {
    note: u32,
}

#[derive(EventSet, Debug, Clone, PartialEq)]
enum BookEvent {
    Lent(Lent),
    Returned(Returned),
    Noted(Noted),
}

#[derive(Aggregate, Default, Debug, Clone, PartialEq)]
#[aggregate(name = "book", events = BookEvent)]
struct Book {
    lent_to: Option<String>,
    notes: Vec<u32>,
}

impl Apply<Lent> for Book {
    fn apply(&mut self, event: Lent) {
        self.lent_to = Some(event.to);
    }
}

impl Apply<Returned> for Book {
    fn apply(&mut self, _: Returned) {
        self.lent_to = None;
    }
}

impl Apply<Noted> for Book {
    fn apply(&mut self, event: Noted) {
        self.notes.push(event.note);
    }
}

#[derive(Debug, PartialEq)]
struct AlreadyLent;

impl std::fmt::Display for AlreadyLent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the book is lent")
    }
}

/// Lends the book, counting how often the command body runs.
fn lend<'a>(
    runs: &'a AtomicUsize,
    to: &str,
) -> impl FnMut(&Book) -> Result<Vec<BookEvent>, AlreadyLent> + 'a {
    let to = to.to_owned();
    move |book: &Book| {
        runs.fetch_add(1, Ordering::SeqCst);
        match book.lent_to {
            Some(_) => Err(AlreadyLent),
            None => Ok(vec![Lent { to: to.clone() }.into()]),
        }
    }
}

fn note(n: u32) -> impl FnMut(&Book) -> Result<Vec<BookEvent>, AlreadyLent> {
    move |_: &Book| Ok(vec![Noted { note: n }.into()])
}

fn with_id(id: &str) -> CommandMetadata {
    CommandMetadata::default().command_id(id)
}

/// Runs the first executions of the scenario; `retry` checks the retries.
async fn first_runs<S: EventStore>(books: &Repository<Book, S>) {
    let runs = AtomicUsize::new(0);
    let first = books
        .execute_with("b1", with_id("lend-1"), lend(&runs, "ada"))
        .await
        .unwrap();
    assert_eq!(
        (first.version, first.appended, first.duplicate),
        (1, 1, false)
    );
    // A multi-event command, then more history on top of both.
    let notes = |_: &Book| {
        Ok::<_, AlreadyLent>(vec![
            Noted { note: 1 }.into(),
            Noted { note: 2 }.into(),
            Noted { note: 3 }.into(),
        ])
    };
    let multi = books
        .execute_with("b1", with_id("notes-1"), notes)
        .await
        .unwrap();
    assert_eq!((multi.version, multi.appended), (4, 3));
    assert!(multi.position > first.position && first.position > 0);
    let unchanged = books
        .execute("b1", |_: &Book| Ok::<_, AlreadyLent>(vec![]))
        .await
        .unwrap();
    assert_eq!(
        (unchanged.appended, unchanged.position),
        (0, 0),
        "nothing appended, nothing to wait for"
    );
    books
        .execute("b1", |_: &Book| Ok::<_, AlreadyLent>(vec![Returned.into()]))
        .await
        .unwrap();
    books.execute("b1", note(9)).await.unwrap();
}

/// Retries both commands: each returns its first outcome, the state as of the version it
/// produced, and its body never runs again, although the lend would now be rejected... or not:
/// the book was returned, so a rerun would lend it again.
async fn retries_return_the_first_outcome<S: EventStore>(books: &Repository<Book, S>) {
    let runs = AtomicUsize::new(0);
    let again = books
        .execute_with("b1", with_id("lend-1"), lend(&runs, "bob"))
        .await
        .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the command body ran again");
    assert_eq!(
        (again.version, again.appended, again.duplicate),
        (1, 1, true)
    );
    assert_eq!(again.state.lent_to.as_deref(), Some("ada"));
    let notes_again = books
        .execute_with("b1", with_id("notes-1"), |_: &Book| {
            Err::<Vec<BookEvent>, _>(AlreadyLent)
        })
        .await
        .unwrap();
    assert_eq!(
        (
            notes_again.version,
            notes_again.appended,
            notes_again.duplicate
        ),
        (4, 3, true)
    );
    assert_eq!(notes_again.state.notes, vec![1, 2, 3]);
    // Nothing was appended by the retries.
    assert_eq!(books.load("b1").await.unwrap().version, 6);
    // Each reports the store position of the last event its first execution appended, for
    // read-your-writes.
    let key = jetsource::AggregateKey::new("book", jetsource::AggregateId::new("b1").unwrap());
    let history = books.store().load(&key, 1).await.unwrap();
    assert_eq!(again.position, history[0].position);
    assert_eq!(notes_again.position, history[3].position);
}

/// A rejecting retry of a command that appended the first time.
async fn a_rejecting_retry_returns_the_first_outcome<S: EventStore>(books: &Repository<Book, S>) {
    let runs = AtomicUsize::new(0);
    books
        .execute_with("b2", with_id("lend-b2"), lend(&runs, "ada"))
        .await
        .unwrap();
    // Lent now: running the command again would be rejected.
    let again = books
        .execute_with("b2", with_id("lend-b2"), lend(&runs, "ada"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Without the id, the command runs and is rejected.
    let err = books.execute("b2", lend(&runs, "eve")).await.unwrap_err();
    assert!(
        matches!(err, ExecuteError::Rejected(AlreadyLent)),
        "{err:?}"
    );
}

#[tokio::test]
async fn in_memory_retries_return_the_first_outcome() {
    let books = Repository::<Book, _>::new(InMemoryStore::new());
    first_runs(&books).await;
    retries_return_the_first_outcome(&books).await;
    a_rejecting_retry_returns_the_first_outcome(&books).await;
    // A new repository over the same store knows as well.
    let other = Repository::<Book, _>::new(books.store().clone());
    retries_return_the_first_outcome(&other).await;
}

async fn jetstream_books(
    server: &NatsServer,
    window: Duration,
) -> Repository<Book, JetStreamStore> {
    let config = support::config("BOOKS").duplicate_window(window);
    Repository::new(support::store_with(server, config).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_retries_return_the_first_outcome_after_the_window_and_a_restart() {
    let mut server = NatsServer::start();
    let window = Duration::from_secs(1);
    let books = jetstream_books(&server, window).await;
    first_runs(&books).await;
    // Inside the server's dedupe window, and through the store that appended.
    retries_return_the_first_outcome(&books).await;
    a_rejecting_retry_returns_the_first_outcome(&books).await;
    // After the window the server has forgotten the message ids: the store's own record (the
    // command ids in the aggregate's history) answers, also in a store that never saw them.
    tokio::time::sleep(window + Duration::from_millis(500)).await;
    retries_return_the_first_outcome(&jetstream_books(&server, window).await).await;
    retries_return_the_first_outcome(&books).await;
    // After a server restart.
    server.restart();
    let after_restart = jetstream_books(&server, window).await;
    retries_return_the_first_outcome(&after_restart).await;
}

/// A repository on a new pool of the PostgreSQL at `url` (migrated, if it was not yet).
async fn postgres_books(url: &str) -> Repository<Book, PgStore> {
    let pool = PgPool::connect(url)
        .await
        .expect("connect to the harness server");
    let store = PgStore::new(pool);
    store.migrate().await.expect("migrations run");
    Repository::new(store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_retries_return_the_first_outcome_after_a_crash_and_restart() {
    // A server of its own, which the test can crash.
    let mut server = PostgresServer::start();
    let books = postgres_books(&server.url()).await;
    first_runs(&books).await;
    retries_return_the_first_outcome(&books).await;
    a_rejecting_retry_returns_the_first_outcome(&books).await;
    // A store on another pool, as another process holds it: the command ids are rows of the
    // events table, kept forever (PostgreSQL has no dedupe window to outlive).
    retries_return_the_first_outcome(&postgres_books(&server.url()).await).await;
    // After the server was killed and ran crash recovery.
    server.kill();
    server.restart();
    retries_return_the_first_outcome(&postgres_books(&server.url()).await).await;
}

/// 32 tasks run 20 commands each on 4 aggregates through one store: every command succeeds at
/// its first attempt, and each aggregate ends with every command's event.
async fn hot_aggregates_never_conflict_in_one_process<S: EventStore>(store: S) {
    let books = Repository::<Book, _>::new(store).with_cache(100);
    let mut tasks = Vec::new();
    for task in 0..32u32 {
        let books = books.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("hot-{}", task % 4);
            let mut max_attempts = 0;
            for n in 0..20 {
                let done = books.execute(&id, note(task * 100 + n)).await.unwrap();
                max_attempts = max_attempts.max(done.attempts);
            }
            max_attempts
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 1, "a command conflicted in-process");
    }
    // Also through a second repository over the same store, as another module of the process
    // would hold it.
    let second = Repository::<Book, _>::new(books.store().clone());
    let (a, b) = tokio::join!(
        books.execute("hot-0", note(1)),
        second.execute("hot-0", note(2))
    );
    assert_eq!((a.unwrap().attempts, b.unwrap().attempts), (1, 1));
    for n in 0..4 {
        let loaded = books.load(&format!("hot-{n}")).await.unwrap();
        let extra = if n == 0 { 2 } else { 0 };
        assert_eq!(loaded.version, 8 * 20 + extra);
        assert_eq!(loaded.state.notes.len() as u64, loaded.version);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_memory_hot_aggregates_never_conflict() {
    hot_aggregates_never_conflict_in_one_process(InMemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jetstream_hot_aggregates_never_conflict() {
    let server = NatsServer::start();
    hot_aggregates_never_conflict_in_one_process(support::store(&server, "HOT").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_hot_aggregates_never_conflict() {
    let store = support::postgres::pg_store("jetsource_commands_hot").await;
    hot_aggregates_never_conflict_in_one_process(store).await;
}

/// Another process (here: another store on its own connection, whose appends this process's
/// lanes cannot order) keeps moving the aggregate; a command that keeps losing gives up with an
/// error saying nothing was appended and that its id may be retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_that_keeps_losing_gives_up_and_says_retrying_is_safe() {
    let server = NatsServer::start();
    let mine = Repository::<Book, _>::new(support::store(&server, "LOSING").await)
        .with_conflict_retries(2);
    let theirs = support::store(&server, "LOSING").await;
    let theirs = Repository::<Book, _>::new(theirs);
    mine.execute("b", note(0)).await.unwrap();
    let other_writes = Arc::new(AtomicUsize::new(0));
    // Before every attempt of ours, the other writer appends, so each attempt's version is stale.
    let sabotage = {
        let other_writes = other_writes.clone();
        move |_: &Book| {
            let n = other_writes.fetch_add(1, Ordering::SeqCst) as u32;
            let theirs = theirs.clone();
            // The other process's append runs to completion before ours is sent.
            std::thread::spawn(move || {
                tokio::runtime::Runtime::new()
                    .unwrap()
                    .block_on(theirs.execute("b", note(1000 + n)))
                    .unwrap();
            })
            .join()
            .unwrap();
            Ok::<_, AlreadyLent>(vec![Noted { note: n }.into()])
        }
    };
    let err = mine
        .execute_with("b", with_id("loser"), sabotage)
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    let ExecuteError::Repository(repository_error) = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(
            repository_error,
            RepositoryError::ConflictsOutlastedRetries { attempts: 3, command_id: Some(id), .. }
                if id == "loser"
        ),
        "{repository_error:?}"
    );
    assert!(repository_error.appended_nothing());
    let message = err.to_string();
    assert!(
        message.contains("nothing was appended")
            && message.contains("retrying command \"loser\" is safe"),
        "{message}"
    );
    // Our command's events are not in the history: only the other writer's.
    let history = mine
        .store()
        .load(&support::key("book", "b"), 1)
        .await
        .unwrap();
    assert_eq!(history.len(), 1 + other_writes.load(Ordering::SeqCst));
    assert!(history
        .iter()
        .all(|e| e.command_id.as_deref() != Some("loser")));
    // The retry the error invites applies once.
    let retried = mine
        .execute_with("b", with_id("loser"), note(7))
        .await
        .unwrap();
    assert_eq!((retried.appended, retried.duplicate), (1, false));
}
