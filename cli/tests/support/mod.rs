//! What the CLI's test files share: running the built binary and reading how it ended.
#![allow(dead_code)]

use std::process::{Command, Output};

/// What one run of the binary printed, and how it ended.
pub struct Run {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// What a finished run left.
    pub fn from_output(output: Output) -> Self {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The standard output of a run that succeeded.
    #[track_caller]
    pub fn success(self) -> String {
        assert_eq!(
            self.code,
            Some(0),
            "the command failed; stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self.stdout
    }

    /// The error line of a run that failed with exit code 1, checked to be one short line
    /// without a panic or backtrace.
    #[track_caller]
    pub fn failure(self) -> String {
        assert_eq!(
            self.code,
            Some(1),
            "expected exit code 1; stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        let stderr = self.stderr.trim_end().to_owned();
        assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.len() < 300, "too long: {stderr}");
        stderr
    }
}

/// The binary, with no connection setting inherited from the environment.
pub fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_jetsource"));
    for var in [
        "NATS_URL",
        "NATS_USER",
        "NATS_PASSWORD",
        "NATS_TOKEN",
        "NATS_CREDS",
        "NATS_NKEY",
        "NATS_CA",
        "NATS_CERT",
        "NATS_KEY",
        "JETSOURCE_DESCRIPTOR_SET",
        "JETSOURCE_DATABASE_URL",
        "JETSOURCE_DATABASE_SCHEMA",
        "PGPASSWORD",
    ] {
        command.env_remove(var);
    }
    command
}

/// Runs the binary to its end, off the async runtime's threads.
pub async fn jetsource(args: &[&str]) -> Run {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Run::from_output(
            binary()
                .args(&args)
                .output()
                .expect("run the jetsource binary"),
        )
    })
    .await
    .expect("the runner thread")
}
