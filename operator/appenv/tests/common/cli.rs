//! The appenv binary running in the background (a `--wait` command), its stderr read line by
//! line so that a test can wait for a line and then act (write a status) before the end.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct Waiting {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    limit: Duration,
}

impl Waiting {
    /// Start `command`; a line waited for must come within `limit`.
    pub fn start(mut command: Command, limit: Duration) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start appenv");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
            limit,
        }
    }

    /// Wait for a line of stderr that contains `text`.
    pub fn line_with(&mut self, text: &str) -> String {
        let deadline = Instant::now() + self.limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::task::block_in_place(|| self.lines.recv_timeout(left)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(e) => panic!("no line with {text:?} ({e}); printed: {:?}", self.seen),
            }
        }
    }

    /// Wait for the end: whether it succeeded, stdout, and all of stderr.
    pub fn finish(mut self) -> (bool, String, String) {
        let output =
            tokio::task::block_in_place(|| self.child.wait_with_output()).expect("appenv ends");
        self.seen.extend(self.lines.try_iter());
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            self.seen.join("\n"),
        )
    }
}
