//! Child processes that cannot outlive us.
//!
//! Every child is started with `PR_SET_PDEATHSIG = SIGKILL`, so the kernel kills it when we die,
//! even by SIGKILL or an aborting panic, where no destructor runs. The kernel ties that signal to
//! the *thread* that forked the child, not the process, so all children are forked by one
//! dedicated thread that lives as long as the process: a child started from a short-lived test
//! thread would otherwise be killed when that test's thread ends.
//!
//! A child can be started again with the command it was first started with
//! ([`Supervised::respawn`], from the same spawner thread), and paused and resumed
//! ([`Supervised::pause`]), so that tests can break the control plane the ways a real one breaks.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// The spawner thread's request channel; `None` if the thread could not be started.
fn spawner() -> Option<&'static Mutex<mpsc::Sender<SpawnRequest>>> {
    static SPAWNER: OnceLock<Option<Mutex<mpsc::Sender<SpawnRequest>>>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<SpawnRequest>();
            std::thread::Builder::new()
                .name("appenv-child-spawner".into())
                .spawn(move || {
                    // The sender lives in a static, so this loop runs until the process exits.
                    while let Ok((mut command, reply)) = rx.recv() {
                        let _ = reply.send(command.spawn());
                    }
                })
                .ok()
                .map(|_| Mutex::new(tx))
        })
        .as_ref()
}

/// A running child whose output goes to a log file. Stopped (TERM, then KILL) on drop.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    child: Child,
    log: PathBuf,
    recipe: Recipe,
}

/// What a child was started with, to start it again the same way.
#[derive(Debug, Clone)]
struct Recipe {
    program: OsString,
    args: Vec<OsString>,
    /// Variables set (`Some`) or removed (`None`) on top of the inherited environment.
    envs: Vec<(OsString, Option<OsString>)>,
    current_dir: Option<PathBuf>,
}

impl Recipe {
    fn of(command: &Command) -> Self {
        Self {
            program: command.get_program().to_owned(),
            args: command.get_args().map(ToOwned::to_owned).collect(),
            envs: command
                .get_envs()
                .map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned)))
                .collect(),
            current_dir: command.get_current_dir().map(ToOwned::to_owned),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        for (key, value) in &self.envs {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        command
    }
}

/// Start `command` from the spawner thread, with PDEATHSIG, its output going to `log`.
fn start(mut command: Command, log: File) -> io::Result<Child> {
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
    // functions (prctl, getppid); it allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() == 1 {
                return Err(io::Error::other("parent exited during spawn"));
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner()
        .ok_or_else(|| io::Error::other("the child-spawner thread could not be started"))?
        .lock()
        .map_err(|_| io::Error::other("child-spawner lock poisoned"))?
        .send((command, tx))
        .map_err(|_| io::Error::other("child-spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("child-spawner thread is gone"))?
}

impl Supervised {
    pub fn spawn(name: &str, command: Command, log: &Path) -> io::Result<Self> {
        let recipe = Recipe::of(&command);
        let child = start(command, File::create(log)?)?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            recipe,
        })
    }

    /// Start the process again with the command it was first started with, appending to the
    /// same log. A process still running is killed first.
    pub fn respawn(&mut self) -> io::Result<()> {
        if self.exited().is_none() {
            self.kill();
        }
        let log = File::options().append(true).create(true).open(&self.log)?;
        self.child = start(self.recipe.command(), log)?;
        Ok(())
    }

    /// Send `signal`, unless the process has exited (its pid may be reused once reaped).
    fn signal(&mut self, signal: libc::c_int) -> io::Result<()> {
        if let Some(status) = self.exited() {
            return Err(io::Error::other(format!(
                "{} is not running ({status})",
                self.name
            )));
        }
        let pid = i32::try_from(self.child.id()).map_err(io::Error::other)?;
        // SAFETY: kill(2) on a pid we own and have not yet reaped.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// SIGSTOP: the process stops serving but keeps its sockets, so its clients' connections
    /// (and new ones, which the kernel still accepts) hang instead of being refused, as they
    /// do across a network partition.
    pub fn pause(&mut self) -> io::Result<()> {
        self.signal(libc::SIGSTOP)
    }

    /// SIGCONT: undo [`Supervised::pause`].
    pub fn resume(&mut self) -> io::Result<()> {
        self.signal(libc::SIGCONT)
    }

    /// SIGTERM, and SIGCONT so that a paused process handles it; does not wait (see
    /// [`Supervised::stop`]).
    pub fn terminate(&mut self) -> io::Result<()> {
        self.signal(libc::SIGTERM)?;
        self.signal(libc::SIGCONT)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(description)` if the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(err) => Some(format!("unknown state: {err}")),
        }
    }

    /// The last `lines` lines of the process's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; always reaps the child.
    pub fn stop(&mut self, grace: Duration) {
        if self.terminate().is_err() {
            // Exited already (and reaped by `exited`), or the signal failed: make sure.
            self.kill();
            return;
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// The last `lines` lines of a file, reading at most its final 64 KiB.
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether a process with this pid exists.
pub fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    unsafe {
        libc::kill(pid, 0) == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_returns_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        std::fs::write(&path, "a\nb\nc\nd\n").expect("write");
        assert_eq!(tail(&path, 2), "c\nd");
        assert_eq!(tail(&path, 10), "a\nb\nc\nd");
        assert_eq!(tail(&dir.path().join("missing"), 3), "");
    }

    #[test]
    fn stop_terminates_and_reaps_a_child() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        let mut child = Supervised::spawn("sleep", cmd, &dir.path().join("log")).expect("spawn");
        let pid = i32::try_from(child.pid()).expect("pid");
        assert!(pid_alive(pid));
        child.stop(Duration::from_secs(2));
        assert!(child.exited().is_some());
        assert!(!pid_alive(pid));
    }

    /// The state letter of /proc/PID/stat (R, S, T for stopped, ...).
    fn state(pid: u32) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let after_name = stat.rsplit_once(')').expect("stat format").1;
        after_name.trim_start().chars().next().expect("state")
    }

    #[test]
    fn respawn_runs_the_same_command_again_and_appends_to_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started $GREETING; exec sleep 600"])
            .env("GREETING", "hello");
        let lines = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while tail(&log, 10).lines().count() < n {
                assert!(Instant::now() < deadline, "log: {:?}", tail(&log, 10));
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        let mut child = Supervised::spawn("sh", cmd, &log).expect("spawn");
        let first = child.pid();
        lines(1);
        child.respawn().expect("respawn");
        let second = child.pid();
        assert_ne!(first, second);
        assert!(!pid_alive(i32::try_from(first).expect("pid")));
        lines(2);
        assert_eq!(tail(&log, 10), "started hello\nstarted hello");
        child.stop(Duration::from_secs(2));
        assert!(!pid_alive(i32::try_from(second).expect("pid")));
    }

    #[test]
    fn pause_stops_a_child_until_resumed_and_stop_ends_a_paused_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        let mut child = Supervised::spawn("sleep", cmd, &dir.path().join("log")).expect("spawn");
        let pid = child.pid();
        let wait_state = |want: char| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while state(pid) != want {
                assert!(Instant::now() < deadline, "state {} not {want}", state(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        child.pause().expect("pause");
        wait_state('T');
        child.resume().expect("resume");
        wait_state('S');
        child.pause().expect("pause");
        wait_state('T');
        let started = Instant::now();
        child.stop(Duration::from_secs(5));
        assert!(child.exited().is_some());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "SIGTERM reached the paused process"
        );
        assert!(child.pause().is_err(), "no signal to an exited child");
    }
}
