//! Real data servers for the backup agent's tests: PostgreSQL 15 with pgvector, an S3 API
//! server (moto), and Python with DuckDB, as `.ci/data-servers.sh` provides them
//! (`APPENV_PG_BIN`, `APPENV_PG_USER`, `APPENV_MOTO_SERVER`, `APPENV_DATA_PYTHON`). A server that
//! cannot start fails the test: nothing here skips.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A command's output, or a panic that shows what it printed.
pub fn checked(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A PostgreSQL 15 cluster of its own in a temp dir, on a loopback port; stopped when dropped.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    user: String,
    pub port: u16,
}

impl Postgres {
    /// initdb and start (trust authentication, superuser `postgres`, database `postgres`).
    pub fn start() -> Self {
        let bin = PathBuf::from(env_or("APPENV_PG_BIN", "/usr/lib/postgresql/15/bin"));
        assert!(
            bin.join("postgres").exists(),
            "no PostgreSQL server in {} (run .ci/data-servers.sh, or set APPENV_PG_BIN)",
            bin.display()
        );
        // postgres refuses root: as root, it runs as APPENV_PG_USER (Debian's `postgres`).
        let root = is_root();
        let user = if root {
            env_or("APPENV_PG_USER", "postgres")
        } else {
            String::new()
        };
        let dir = tempfile::Builder::new()
            .prefix("appenv-pg-")
            .tempdir_in("/tmp")
            .expect("a temp dir");
        let postgres = Self {
            port: free_port(),
            dir,
            bin,
            user,
        };
        if !postgres.user.is_empty() {
            checked(
                Command::new("chown")
                    .arg(&postgres.user)
                    .arg(postgres.dir.path()),
            );
        }
        let data = postgres.dir.path().join("data");
        checked(postgres.as_owner("initdb").args([
            "-D".as_ref(),
            data.as_os_str(),
            "-A".as_ref(),
            "trust".as_ref(),
            "-U".as_ref(),
            "postgres".as_ref(),
            "--no-locale".as_ref(),
            "-E".as_ref(),
            "UTF8".as_ref(),
            "--no-sync".as_ref(),
        ]));
        let options = format!(
            "-k {} -p {} -c listen_addresses=127.0.0.1 -c fsync=off",
            postgres.dir.path().display(),
            postgres.port
        );
        checked(
            postgres
                .as_owner("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(postgres.dir.path().join("log"))
                .args(["-w", "-o", &options, "start"]),
        );
        postgres
    }

    /// A server command, run as the cluster's owner.
    fn as_owner(&self, tool: &str) -> Command {
        let mut command = if self.user.is_empty() {
            Command::new(self.bin.join(tool))
        } else {
            let mut c = Command::new("runuser");
            c.args(["-u", &self.user, "--"]).arg(self.bin.join(tool));
            c
        };
        command.current_dir(self.dir.path());
        command
    }

    /// The libpq variables of the `postgres` database, for psql and the agent.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PGHOST", "127.0.0.1".into()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", "postgres".into()),
            ("PGDATABASE", "postgres".into()),
        ]
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Run SQL with psql (stop on the first error); its unaligned, tuples-only output.
    pub fn sql(&self, sql: &str) -> String {
        let output = checked(
            Command::new(self.bin.join("psql"))
                .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
                .envs(self.env()),
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .as_owner("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether this process runs as root, from /proc (no unsafe, no libc call).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// moto's S3 API server on a loopback port; killed when dropped.
pub struct S3 {
    child: Child,
    pub port: u16,
}

impl S3 {
    pub fn start() -> Self {
        let server = env_or("APPENV_MOTO_SERVER", "moto_server");
        let port = free_port();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {server} (run .ci/data-servers.sh, or set APPENV_MOTO_SERVER): {e}"
                )
            });
        let s3 = Self { child, port };
        wait_for_port(port, "moto_server");
        s3
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Create a bucket (moto takes unsigned path-style requests).
    pub fn create_bucket(&self, bucket: &str) {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).expect("connect");
        write!(
            stream,
            "PUT /{bucket} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\r\n",
            self.port
        )
        .expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        assert!(
            response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
            "{response}"
        );
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a Python script with the venv that has duckdb; its stdout.
pub fn python(script: &str) -> String {
    let python = env_or("APPENV_DATA_PYTHON", "python3");
    let output = checked(Command::new(&python).args(["-c", script]));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Files served over HTTP on loopback, as a dump's server would (one request per connection;
/// any other path: 404). Its base URL.
pub fn serve(files: Vec<(&'static str, Vec<u8>)>) -> String {
    use std::io::{BufRead as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = String::new();
            let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            // The path without its query.
            let path = request.split_whitespace().nth(1).unwrap_or_default();
            let path = path.split('?').next().unwrap_or_default();
            let _ = match files.iter().find(|(name, _)| *name == path) {
                Some((_, body)) => stream
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|()| stream.write_all(body)),
                None => stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
            };
        }
    });
    base
}

pub fn sha256_of(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("f");
    std::fs::write(&file, bytes).expect("write");
    let out = checked(Command::new("sha256sum").arg(&file));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a checksum")
        .to_owned()
}
