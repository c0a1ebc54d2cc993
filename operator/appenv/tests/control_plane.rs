//! The local control plane cleans up after itself, runs kube-controller-manager with the client
//! rate it is given, and `appenv dev` works as a newcomer uses it.

use appenv_localcluster::{ClientRate, ControlPlane, Process, StartOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// PIDs of the processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state, ppid, ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            children.push(pid);
        }
    }
    children
}

/// The command line of a running process, one argument per element.
fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .expect("read /proc/PID/cmdline")
        .split(|b| *b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// The command line of the kube-controller-manager among `pids`.
fn controller_manager_cmdline(pids: &[u32]) -> Vec<String> {
    pids.iter()
        .map(|pid| cmdline(*pid))
        .find(|args| {
            args.first()
                .is_some_and(|program| program.ends_with("/kube-controller-manager"))
        })
        .unwrap_or_else(|| panic!("no kube-controller-manager among {pids:?}"))
}

/// Poll (the processes give no event to watch) until no pid in `pids` is alive.
fn wait_gone(pids: &[u32], limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn dropping_a_control_plane_stops_its_processes_and_removes_its_files() {
    let control_plane = ControlPlane::start(StartOptions::default())
        .await
        .expect("control plane starts");
    let pids = control_plane.pids();
    let dir = control_plane.kubeconfig().parent().expect("dir").to_owned();
    assert_eq!(
        pids.len(),
        3,
        "etcd, kube-apiserver, kube-controller-manager"
    );
    assert!(pids.iter().all(|p| alive(*p)));
    assert!(dir.exists());

    drop(control_plane);
    assert_eq!(wait_gone(&pids, Duration::from_secs(10)), Vec::<u32>::new());
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[tokio::test]
async fn the_controller_manager_runs_with_the_client_rate_it_is_given() {
    // Not the default, so that only the option can have put these on its command line.
    let rate = ClientRate {
        qps: 1234,
        burst: 2345,
    };
    assert_ne!(rate, ClientRate::default());
    // `start` returns only once the controller manager runs its controllers: it accepted the
    // flags (an unknown or malformed flag makes it exit at once, and `start` fail).
    let control_plane = ControlPlane::start(StartOptions {
        controller_manager_rate: rate,
        ..StartOptions::default()
    })
    .await
    .expect("control plane starts");
    let pid = control_plane
        .pid(Process::ControllerManager)
        .expect("kube-controller-manager runs");
    let args = controller_manager_cmdline(&[pid]);
    assert!(args.iter().any(|a| a == "--kube-api-qps=1234"), "{args:?}");
    assert!(
        args.iter().any(|a| a == "--kube-api-burst=2345"),
        "{args:?}"
    );
    control_plane.shutdown();
    assert_eq!(control_plane.pid(Process::ControllerManager), None);
}

struct Dev {
    child: Child,
    kubeconfig: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Dev {
    /// A test that failed before stopping `appenv dev` stops it here, as Ctrl-C does (and
    /// outright after 10 s): left running, it would hold the test harness's stderr open and
    /// keep `cargo test` (and CI) waiting for ever.
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        signal(self.child.id(), libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `appenv dev` with `flags` and wait for its "ready" line; returns how long that took.
fn start_dev(flags: &[&str]) -> (Dev, Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_appenv"))
        .args(["dev", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn appenv dev");
    let stdout = child.stdout.take().expect("stdout");
    let mut printed = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read stdout");
        printed.push_str(&line);
        printed.push('\n');
        if line.contains("Press Ctrl-C") {
            break;
        }
    }
    assert!(
        printed.contains("is ready at https://127.0.0.1:"),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("export KUBECONFIG={}", kubeconfig.display())),
        "{printed}"
    );
    assert!(
        printed.contains("SIMULATED"),
        "says that Pods are simulated: {printed}"
    );
    (
        Dev {
            child,
            kubeconfig,
            _dir: dir,
        },
        started.elapsed(),
    )
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on our own child process.
    unsafe {
        libc::kill(i32::try_from(pid).expect("pid"), signal);
    }
}

#[test]
fn appenv_dev_serves_a_ready_node_and_shuts_down_cleanly_on_ctrl_c() {
    let (mut dev, took) = start_dev(&["--controller-manager-qps", "321"]);
    // Past the harness's output capture, so CI logs show the figure.
    let _ = writeln!(
        std::io::stderr(),
        "[appenv] `appenv dev` was ready in {:.1}s",
        took.as_secs_f64()
    );
    let components = children_of(dev.child.id());
    assert_eq!(
        components.len(),
        3,
        "etcd, kube-apiserver, kube-controller-manager"
    );
    // The flag reaches kube-controller-manager, with a burst of twice the rate by default.
    let args = controller_manager_cmdline(&components);
    assert!(args.iter().any(|a| a == "--kube-api-qps=321"), "{args:?}");
    assert!(args.iter().any(|a| a == "--kube-api-burst=642"), "{args:?}");

    // The simulated node registers right after the ready line; kubectl shows it Ready.
    let deadline = Instant::now() + Duration::from_secs(30);
    let nodes = loop {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&dev.kubeconfig)
            .args(["get", "nodes", "--no-headers"])
            .output()
            .expect("run kubectl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains(" Ready ") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        nodes.starts_with("appenv-sim-node ") && nodes.contains(" Ready "),
        "{nodes}"
    );

    signal(dev.child.id(), libc::SIGINT);
    let status = dev.child.wait().expect("wait");
    assert!(status.success(), "appenv dev exits 0 on Ctrl-C: {status}");
    assert_eq!(
        wait_gone(&components, Duration::from_secs(10)),
        Vec::<u32>::new()
    );
    assert!(!dev.kubeconfig.exists(), "kubeconfig removed on shutdown");
}

#[test]
fn appenv_dev_killed_outright_takes_its_control_plane_with_it() {
    let (mut dev, _) = start_dev(&[]);
    let components = children_of(dev.child.id());
    assert_eq!(components.len(), 3);

    signal(dev.child.id(), libc::SIGKILL);
    let _ = dev.child.wait();
    assert_eq!(
        wait_gone(&components, Duration::from_secs(10)),
        Vec::<u32>::new(),
        "control-plane processes outlived a SIGKILLed appenv dev"
    );
}

/// `kubectl --kubeconfig KUBECONFIG ARGS`: exit success and stdout.
fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn appenv_dev_examples_come_up_ready_with_the_secrets_a_user_would_create() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let (mut dev, _) = start_dev(&["--examples", examples]);
    let config = dev.kubeconfig.clone();
    // Every example environment becomes Ready (kubectl waits on the condition).
    let (ok, waited) = kubectl(
        &config,
        &[
            "wait",
            "--for=condition=Ready",
            "appenvironments",
            "--all",
            "--timeout=180s",
        ],
    );
    let (_, listed) = kubectl(&config, &["get", "appenvironments", "-o", "wide"]);
    assert!(ok, "{waited}\n{listed}");
    assert_eq!(
        listed.lines().filter(|l| l.contains(" Ready ")).count(),
        6,
        "{listed}"
    );
    // The Secrets a user keeps in a secret manager, with placeholder values: the copy source
    // (copied into the Flask-React-Template environments by appenv), and the Secret aifacade
    // reads in its own namespace.
    for (namespace, name) in [
        ("flask-react-template-secrets", "doppler-secrets"),
        ("flask-react-template-pr-123", "doppler-secrets"),
        ("flask-react-template-production", "doppler-secrets"),
        ("aifacade", "aifacade-secrets"),
        // S3 credentials: t7e's backups, and the preview's read of them.
        ("t7e-prod", "t7e-backups"),
        ("t7e-pr-42", "t7e-backups-read"),
    ] {
        let (ok, found) = kubectl(
            &config,
            &["get", "secret", name, "-n", namespace, "-o", "name"],
        );
        assert!(ok, "{namespace}/{name}: {found}");
    }
    let (_, copy) = kubectl(
        &config,
        &[
            "get",
            "secret",
            "doppler-secrets",
            "-n",
            "flask-react-template-pr-123",
            "-o",
            "jsonpath={.metadata.annotations.appenv\\.dev/copied-from} {.data.MONGODB_URI}",
        ],
    );
    assert_eq!(
        copy.trim(),
        "flask-react-template-secrets/doppler-secrets cGxhY2Vob2xkZXI=",
        "the copy of the placeholder (base64 of \"placeholder\")"
    );
    signal(dev.child.id(), libc::SIGINT);
    let status = dev.child.wait().expect("wait");
    assert!(status.success(), "appenv dev exits 0 on Ctrl-C: {status}");
}
