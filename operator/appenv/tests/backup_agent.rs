//! The backup agent (`appenv agent`) on real data: PostgreSQL 15 with pgvector and an S3 API
//! server, SQLite with a writer that keeps inserting, DuckDB files written and read by DuckDB
//! itself; retention, an agent killed mid-upload, and bad input. The agent runs as the binary
//! the Jobs run.

mod data;

use data::{Postgres, S3, checked, python, serve, sha256_of};
use std::borrow::BorrowMut;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Secrets the agent is given in every test: none may appear in what it prints.
const AWS_SECRET: &str = "sEcReT-aws-4c1d";
const PG_PASSWORD: &str = "sEcReT-pg-77ab";

fn agent(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_appenv"));
    command
        .arg("agent")
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "appenv-test")
        .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        .env("PGPASSWORD", PG_PASSWORD)
        .env("APPENV_LOG", "info");
    command
}

fn printed(output: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !text.contains(AWS_SECRET) && !text.contains(PG_PASSWORD),
        "a secret was printed: {text}"
    );
    text
}

/// Run the agent; it must succeed. What it printed.
fn ok(mut command: impl BorrowMut<Command>) -> String {
    printed(&checked(command.borrow_mut()))
}

/// Run the agent; it must fail. What it printed.
fn refused(mut command: impl BorrowMut<Command>) -> String {
    let output = command.borrow_mut().output().expect("runs");
    let text = printed(&output);
    assert!(!output.status.success(), "succeeded: {text}");
    text
}

fn listed_ids(list: &str) -> Vec<String> {
    list.lines()
        .skip(1)
        .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn postgres_with_pgvector_round_trips_through_s3() {
    let (pg, s3) = (Postgres::start(), S3::start());
    s3.create_bucket("backups");
    pg.sql("CREATE EXTENSION vector");
    pg.sql(
        "CREATE TABLE items (id int PRIMARY KEY, embedding vector(3), note text);
         INSERT INTO items
           SELECT i, ARRAY[sin(i), cos(i), (i % 97) / 10.0]::vector, 'item ' || i
           FROM generate_series(1, 10000) AS i;",
    );
    let fingerprint = "SELECT count(*) || ' ' || md5(string_agg(id || ':' || embedding::text || ':' || note, ',' ORDER BY id)) FROM items";
    let nearest = "SELECT string_agg(id::text, ',') FROM (SELECT id FROM items ORDER BY embedding <-> '[0.5, -0.5, 4.2]' LIMIT 5) AS n";
    let (rows, answer) = (pg.sql(fingerprint), pg.sql(nearest));
    assert!(rows.starts_with("10000 "), "{rows}");

    let store = [
        "--environment",
        "shop-production",
        "--destination",
        "s3://backups/appenv",
        "--s3-endpoint",
    ];
    let endpoint = s3.endpoint();
    let with_store = |command: &str| {
        let mut c = agent(&[command]);
        c.args(store).arg(&endpoint);
        c
    };
    let pg_bin = pg.bin().to_string_lossy().into_owned();
    let out = ok(with_store("backup")
        .args(["--engine", "postgres", "--pg-bin", &pg_bin])
        .envs(pg.env()));
    assert!(out.contains("backup ") && out.contains("complete"), "{out}");
    let list = ok(&mut with_store("list"));
    assert_eq!(listed_ids(&list).len(), 1, "{list}");
    assert!(
        list.contains("postgres") && list.contains("manual"),
        "{list}"
    );

    pg.sql("DROP TABLE items");
    let out = ok(with_store("restore")
        .args([
            "--engine", "postgres", "--pg-bin", &pg_bin, "--backup", "latest",
        ])
        .envs(pg.env()));
    assert!(out.contains("restored backup"), "{out}");
    assert_eq!(pg.sql(fingerprint), rows, "the same rows");
    assert_eq!(pg.sql(nearest), answer, "the same nearest neighbours");

    // Over a database that has tables: refused unless asked, then done in one transaction.
    pg.sql("UPDATE items SET note = 'changed' WHERE id <= 10");
    let out = refused(
        with_store("restore")
            .args([
                "--engine", "postgres", "--pg-bin", &pg_bin, "--backup", "latest",
            ])
            .envs(pg.env()),
    );
    assert!(
        out.contains("database postgres holds") && out.contains("--into-non-empty"),
        "{out}"
    );
    assert_ne!(pg.sql(fingerprint), rows, "nothing was restored");
    ok(with_store("restore")
        .args([
            "--engine",
            "postgres",
            "--pg-bin",
            &pg_bin,
            "--backup",
            "latest",
            "--into-non-empty",
        ])
        .envs(pg.env()));
    assert_eq!(pg.sql(fingerprint), rows);
}

#[test]
fn a_failed_dump_leaves_no_backup() {
    let s3 = S3::start();
    s3.create_bucket("backups");
    let dir = tempfile::tempdir().expect("dir");
    let endpoint = s3.endpoint();
    // No server on this port: pg_dump fails; nothing may be listed.
    let out = refused(
        agent(&[
            "backup",
            "--environment",
            "shop",
            "--destination",
            "s3://backups/x",
            "--s3-endpoint",
            &endpoint,
            "--engine",
            "postgres",
        ])
        .env(
            "APPENV_PG_BIN",
            std::env::var("APPENV_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
        )
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", "1")
        .current_dir(dir.path()),
    );
    assert!(out.contains("pg_dump failed"), "{out}");
    let list = ok(agent(&[
        "list",
        "--environment",
        "shop",
        "--destination",
        "s3://backups/x",
        "--s3-endpoint",
        &endpoint,
    ]));
    assert!(
        listed_ids(&list).is_empty() && list.contains("no complete backup of shop"),
        "{list}"
    );
}

/// A SQLite database in WAL mode with `rows` rows of ~1 KiB.
fn sqlite_with_rows(file: &Path, rows: u64) {
    let db = rusqlite::Connection::open(file).expect("open");
    db.pragma_update(None, "journal_mode", "WAL").expect("wal");
    db.execute_batch("CREATE TABLE events (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        .expect("schema");
    let tx = db.unchecked_transaction().expect("tx");
    for i in 1..=rows {
        tx.execute(
            "INSERT INTO events (id, body) VALUES (?1, zeroblob(1024))",
            [i],
        )
        .expect("insert");
    }
    tx.commit().expect("commit");
}

#[test]
fn sqlite_backup_while_a_writer_inserts_holds_every_row_committed_before_it() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, backups) = (dir.path().join("app.sqlite"), dir.path().join("backups"));
    sqlite_with_rows(&db, 50_000);

    // A writer that commits a row at a time, as fast as it can, until told to stop.
    let (stop, last) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(50_000)),
    );
    let writer = {
        let (db, stop, last) = (db.clone(), stop.clone(), last.clone());
        std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&db).expect("open");
            conn.busy_timeout(Duration::from_secs(10)).expect("timeout");
            let mut id = last.load(Ordering::SeqCst);
            while !stop.load(Ordering::SeqCst) {
                id += 1;
                conn.execute(
                    "INSERT INTO events (id, body) VALUES (?1, zeroblob(1024))",
                    [id],
                )
                .expect("insert");
                last.store(id, Ordering::SeqCst);
            }
        })
    };
    while last.load(Ordering::SeqCst) < 50_100 {
        std::thread::yield_now();
    }
    let committed_before = last.load(Ordering::SeqCst);
    let destination = backups.to_string_lossy().into_owned();
    let db_arg = db.to_string_lossy().into_owned();
    ok(agent(&[
        "backup",
        "--environment",
        "app",
        "--destination",
        &destination,
        "--engine",
        "sqlite",
        "--file",
        &db_arg,
    ]));
    let written_during = last.load(Ordering::SeqCst) - committed_before;
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");
    assert!(
        written_during > 0,
        "the writer kept inserting during the backup"
    );

    let restored = dir.path().join("restored.sqlite");
    let restored_arg = restored.to_string_lossy().into_owned();
    let restore_latest = || {
        agent(&[
            "restore",
            "--environment",
            "app",
            "--destination",
            &destination,
            "--engine",
            "sqlite",
            "--file",
            &restored_arg,
            "--backup",
            "latest",
        ])
    };
    ok(restore_latest());
    let copy = rusqlite::Connection::open(&restored).expect("open the copy");
    let check: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(check, "ok");
    let (count, max): (u64, u64) = copy
        .query_row("SELECT count(*), max(id) FROM events", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("rows");
    assert!(
        max >= committed_before,
        "every row committed before the backup: {max} < {committed_before}"
    );
    assert_eq!(count, max, "no gap: the copy is one snapshot");

    // A restore over a database with tables is refused unless asked.
    let out = refused(restore_latest());
    assert!(
        out.contains("holds 1 tables") && out.contains("--into-non-empty"),
        "{out}"
    );
}

#[test]
fn duckdb_file_round_trips_and_answers_as_before() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("ledger.duckdb");
    let file_arg = file.to_string_lossy().into_owned();
    let query = "SELECT count(*), sum(amount), max(account) FROM ledger";
    let answer = python(&format!(
        "import duckdb\n\
         c = duckdb.connect({file_arg:?})\n\
         c.execute(\"CREATE TABLE ledger AS SELECT range AS id, range % 113 AS account, (range * 7) % 1000 AS amount FROM range(200000)\")\n\
         c.execute(\"INSERT INTO ledger VALUES (200000, 7, 42)\")\n\
         print(c.execute({query:?}).fetchall())\n\
         c.close()"
    ));
    let destination = dir.path().join("backups").to_string_lossy().into_owned();
    ok(agent(&[
        "backup",
        "--environment",
        "dojo",
        "--destination",
        &destination,
        "--engine",
        "duckdb",
        "--file",
        &file_arg,
    ]));
    std::fs::remove_file(&file).expect("lose the file");
    ok(agent(&[
        "restore",
        "--environment",
        "dojo",
        "--destination",
        &destination,
        "--engine",
        "duckdb",
        "--file",
        &file_arg,
        "--backup",
        "latest",
    ]));
    let again = python(&format!(
        "import duckdb\nc = duckdb.connect({file_arg:?}, read_only=True)\nprint(c.execute({query:?}).fetchall())"
    ));
    assert_eq!(again, answer);
    assert!(answer.starts_with("[(200001,"), "{answer}");

    // While a DuckDB process has the file open, the agent refuses to copy it.
    let mut holder = Command::new(std::env::var("APPENV_DATA_PYTHON").unwrap_or_else(|_| "python3".into()))
        .args(["-c", &format!("import duckdb, sys\nc = duckdb.connect({file_arg:?})\nprint('open', flush=True)\nsys.stdin.read()")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("read");
    assert_eq!(line.trim(), "open");
    let out = refused(agent(&[
        "backup",
        "--environment",
        "dojo",
        "--destination",
        &destination,
        "--engine",
        "duckdb",
        "--file",
        &file_arg,
    ]));
    assert!(out.contains("is open in another process"), "{out}");
    drop(holder.stdin.take());
    assert!(holder.wait().expect("python ends").success());
    let list = ok(agent(&[
        "list",
        "--environment",
        "dojo",
        "--destination",
        &destination,
    ]));
    assert_eq!(
        listed_ids(&list).len(),
        1,
        "the refused copy left nothing: {list}"
    );
}

#[test]
fn retention_keeps_exactly_n_and_a_killed_upload_is_never_latest() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("app.sqlite");
    sqlite_with_rows(&db, 10);
    let backups = dir.path().join("backups");
    let destination = backups.to_string_lossy().into_owned();
    let db_arg = db.to_string_lossy().into_owned();
    let store = [
        "--environment",
        "app",
        "--destination",
        destination.as_str(),
    ];

    // An attempt abandoned long ago: a data file, no manifest.
    let abandoned = backups.join("app/20200101-000000-000");
    std::fs::create_dir_all(&abandoned).expect("dir");
    std::fs::write(abandoned.join("database.sqlite"), b"half").expect("write");

    for _ in 0..4 {
        ok(agent(&["backup"])
            .args(store)
            .args(["--engine", "sqlite", "--file", &db_arg, "--keep", "2"]));
    }
    let list = ok(agent(&["list"]).args(store));
    let kept = listed_ids(&list);
    assert_eq!(kept.len(), 2, "{list}");
    assert!(
        walk(&abandoned).is_empty(),
        "the abandoned attempt's files were removed"
    );

    // An agent killed in the middle of a large upload.
    let big = dir.path().join("big.duckdb");
    {
        let f = std::fs::File::create(&big).expect("create");
        let mut w = std::io::BufWriter::new(f);
        let chunk: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
        for _ in 0..400 {
            std::io::Write::write_all(&mut w, &chunk).expect("write");
        }
    }
    let big_arg = big.to_string_lossy().into_owned();
    let mut child = agent(&["backup"])
        .args(store)
        .args(["--engine", "duckdb", "--file", &big_arg])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    // The upload has begun once a staged part of the data file exists in the backups.
    let deadline = Instant::now() + Duration::from_secs(60);
    let started_upload = || {
        walk(&backups.join("app"))
            .iter()
            .any(|p| p.to_string_lossy().contains("database.duckdb"))
    };
    while !started_upload() {
        assert!(Instant::now() < deadline, "the upload never started");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the agent ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("kill");
    child.wait().expect("reaped");
    let list = ok(agent(&["list"]).args(store));
    assert_eq!(
        listed_ids(&list),
        kept,
        "the killed backup is not listed: {list}"
    );
    // Restoring `latest` gives the last complete backup, the sqlite one.
    let restored = dir.path().join("restored.sqlite");
    let out = ok(agent(&["restore"]).args(store).args([
        "--engine",
        "sqlite",
        "--file",
        &restored.to_string_lossy(),
        "--backup",
        "latest",
    ]));
    assert!(
        out.contains(kept.last().map_or("?", String::as_str)),
        "{out}"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn bad_input_is_named_and_nothing_is_listed() {
    let s3 = S3::start();
    let endpoint = s3.endpoint();
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("app.sqlite");
    sqlite_with_rows(&db, 3);
    let db_arg = db.to_string_lossy().into_owned();

    // `command` on environment app's backups at `destination` (on the S3 API at `endpoint`).
    let at = |command: &str, destination: &str, endpoint: &str| {
        let mut c = agent(&[
            command,
            "--environment",
            "app",
            "--destination",
            destination,
        ]);
        if !endpoint.is_empty() {
            c.args(["--s3-endpoint", endpoint]);
        }
        c
    };
    let sqlite = ["--engine", "sqlite", "--file", db_arg.as_str()];

    // A bucket that does not exist.
    let out = refused(at("backup", "s3://missing-bucket/x", &endpoint).args(sqlite));
    assert!(
        out.contains("s3://missing-bucket/x/app at http") && out.contains("NoSuchBucket"),
        "{out}"
    );

    // An endpoint nobody listens on: reported, quickly.
    let started = Instant::now();
    let out = refused(at("list", "s3://backups/x", "http://127.0.0.1:1"));
    assert!(
        out.contains("s3://backups/x/app at http://127.0.0.1:1: Connection refused"),
        "{out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );

    // A backup that does not exist (also written as the Job's termination message, which the
    // operator reads), an id that could be a path, a bad destination.
    s3.create_bucket("backups");
    let termination = dir.path().join("termination-log");
    std::fs::write(&termination, "").expect("termination log");
    let out = refused(
        at("restore", "s3://backups/x", &endpoint)
            .args(sqlite)
            .args(["--backup", "20200101-000000-000"])
            .env("APPENV_TERMINATION_LOG", &termination),
    );
    assert!(
        out.contains("backup 20200101-000000-000 does not exist in s3://backups/x"),
        "{out}"
    );
    let message = std::fs::read_to_string(&termination).expect("read");
    assert!(
        message.contains("backup 20200101-000000-000 does not exist in s3://backups/x/app"),
        "{message}"
    );
    let out = refused(
        at("restore", "s3://backups/x", &endpoint)
            .args(sqlite)
            .args(["--backup", "../../etc"]),
    );
    assert!(out.contains("YYYYMMDD-HHMMSS-mmm"), "{out}");
    let out = refused(agent(&[
        "list",
        "--environment",
        "../prod",
        "--destination",
        "/tmp/x",
    ]));
    assert!(out.contains("environment \"../prod\""), "{out}");
    let out = refused(at("backup", "relative/dir", "").args(sqlite));
    assert!(out.contains("destination \"relative/dir\""), "{out}");
    let out = refused(at("backup", "/tmp/x", "").args([
        "--engine",
        "sqlite",
        "--file",
        "/nonexistent/app.sqlite",
    ]));
    assert!(
        out.contains("/nonexistent/app.sqlite: no such file"),
        "{out}"
    );
    let list = ok(at("list", "s3://backups/x", &endpoint));
    assert!(listed_ids(&list).is_empty(), "{list}");
}

#[test]
fn a_dump_url_is_checked_before_anything_changes_then_restored() {
    let pg = Postgres::start();
    pg.sql("CREATE EXTENSION vector");
    pg.sql(
        "CREATE TABLE items (id int PRIMARY KEY, embedding vector(3));
         INSERT INTO items SELECT i, ARRAY[sin(i), cos(i), i % 7]::vector
           FROM generate_series(1, 2000) AS i;",
    );
    let fingerprint = "SELECT count(*) || ' ' || md5(string_agg(id || ':' || embedding::text, ',' ORDER BY id)) FROM items";
    let rows = pg.sql(fingerprint);
    let dump = checked(
        Command::new(pg.bin().join("pg_dump"))
            .args(["--format=custom", "--no-password"])
            .envs(pg.env()),
    )
    .stdout;
    pg.sql("DROP TABLE items; DROP EXTENSION vector");
    let dir = tempfile::tempdir().expect("dir");
    let sqlite_file = dir.path().join("notes.db");
    sqlite_with_rows(&sqlite_file, 100);
    let sqlite = std::fs::read(&sqlite_file).expect("read");
    let sha = sha256_of(&dump);
    let base = serve(vec![
        ("/shop.dump", dump.clone()),
        ("/notes.db", sqlite.clone()),
    ]);
    let pg_bin = pg.bin().to_string_lossy().into_owned();
    let termination_log = dir.path().join("termination-log");
    std::fs::write(&termination_log, "").expect("log");
    let restore = |url: &str, sha256: &str| {
        let mut c = agent(&["restore", "--engine", "postgres", "--pg-bin", &pg_bin]);
        c.env("APPENV_RESTORE_URL", url)
            .env("APPENV_TERMINATION_LOG", &termination_log)
            .envs(pg.env());
        if !sha256.is_empty() {
            c.args(["--sha256", sha256]);
        }
        c
    };
    let signed = format!("{base}/shop.dump?X-Amz-Signature=s3cr3t-signature");
    let no_table = "SELECT count(*) FROM pg_class WHERE relname = 'items'";

    // A dump that is not the one meant: refused before the database changes; the URL is shown
    // without its signature.
    let out = refused(restore(&signed, &"0".repeat(64)));
    assert!(
        out.contains(&format!(
            "the dump at {base}/shop.dump has SHA-256 {sha} ({} bytes), not the {}",
            dump.len(),
            "0".repeat(64)
        )) && !out.contains("s3cr3t"),
        "{out}"
    );
    assert_eq!(pg.sql(no_table), "0", "nothing was restored");
    // A missing dump, and a file that is no pg_dump archive.
    let out = refused(restore(
        &format!("{base}/gone.dump?X-Amz-Signature=s3cr3t"),
        "",
    ));
    assert!(
        out.contains(&format!(
            "downloading the dump at {base}/gone.dump: the server answered 404 Not Found"
        )) && !out.contains("s3cr3t"),
        "{out}"
    );
    let out = refused(restore(&format!("{base}/notes.db"), ""));
    assert!(
        out.contains("is not a pg_dump custom-format archive"),
        "{out}"
    );
    assert_eq!(pg.sql(no_table), "0");
    let out = refused(restore("http://127.0.0.1:9/shop.dump", ""));
    assert!(
        out.contains("downloading the dump at http://127.0.0.1:9/shop.dump:")
            && out.contains("refused"),
        "{out}"
    );

    // The right one: restored, and the operator reads what from the termination log.
    let out = ok(restore(&signed, &sha));
    assert!(
        out.contains(&format!("restored the dump at {base}/shop.dump")) && !out.contains("s3cr3t"),
        "{out}"
    );
    assert_eq!(pg.sql(fingerprint), rows, "the same rows");
    assert_eq!(
        std::fs::read_to_string(&termination_log).expect("log"),
        format!("restored sha256:{} {}", &sha[..12], dump.len())
    );

    // SQLite: the database file itself, checked before it replaces anything.
    let target = dir.path().join("restored.db");
    let target_arg = target.to_string_lossy().into_owned();
    let mut c = agent(&["restore", "--engine", "sqlite", "--file", &target_arg]);
    c.args([
        "--url",
        &format!("{base}/notes.db"),
        "--sha256",
        &sha256_of(&sqlite),
    ]);
    ok(c);
    let db = rusqlite::Connection::open(&target).expect("open");
    let count: i64 = db
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .expect("count");
    assert_eq!(count, 100);
    let mut c = agent(&["restore", "--engine", "sqlite", "--file", &target_arg]);
    c.args(["--url", &format!("{base}/shop.dump"), "--into-non-empty"]);
    let out = refused(c);
    assert!(out.contains("is not a SQLite database file"), "{out}");
}

/// A restore from a VolumeSnapshot reads the file from the snapshot's volume
/// (`--url file:///snapshot/FILE`): a crash-consistent copy taken while the app wrote, whose
/// last transactions are in the WAL beside the file. The WAL is restored with it.
#[test]
fn a_file_of_a_volume_snapshot_restores_with_the_wal_beside_it() {
    let dir = tempfile::tempdir().expect("dir");
    let snapshot = dir.path().join("snapshot");
    std::fs::create_dir(&snapshot).expect("dir");

    // SQLite: 100 rows checkpointed into the file, 50 more only in its WAL when the volume's
    // snapshot is taken (the writer still has it open).
    let live = dir.path().join("app.sqlite");
    sqlite_with_rows(&live, 100);
    let writer = rusqlite::Connection::open(&live).expect("open");
    writer
        .pragma_update(None, "wal_autocheckpoint", 0)
        .expect("no checkpoint");
    for i in 101..=150 {
        writer
            .execute(
                "INSERT INTO events (id, body) VALUES (?1, zeroblob(16))",
                [i],
            )
            .expect("insert");
    }
    for suffix in ["", "-wal"] {
        std::fs::copy(
            format!("{}{suffix}", live.display()),
            format!("{}/app.sqlite{suffix}", snapshot.display()),
        )
        .expect("snapshot");
    }
    drop(writer);
    let url = format!("file://{}/app.sqlite", snapshot.display());
    let target = dir.path().join("restored.sqlite");
    let target_arg = target.to_string_lossy().into_owned();
    sqlite_with_rows(&target, 3);
    let restore = |engine: &str, url: &str, file: &str| {
        let mut c = agent(&["restore", "--engine", engine, "--file", file]);
        c.args(["--url", url, "--into-non-empty"]);
        c
    };
    ok(restore("sqlite", &url, &target_arg));
    let db = rusqlite::Connection::open(&target).expect("open");
    let count: i64 = db
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .expect("count");
    assert_eq!(count, 150, "the rows of the WAL too");
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(check, "ok");
    drop(db);
    let left: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".restore-"))
        .collect();
    assert!(left.is_empty(), "staged files left: {left:?}");
    // Without its WAL, the snapshot's file holds only what was checkpointed.
    std::fs::remove_file(snapshot.join("app.sqlite-wal")).expect("remove");
    ok(restore("sqlite", &url, &target_arg));
    let db = rusqlite::Connection::open(&target).expect("open");
    let count: i64 = db
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .expect("count");
    assert_eq!(count, 100);

    // DuckDB: 1,000 rows checkpointed, 500 more in `ledger.duckdb.wal`.
    let ledger = dir.path().join("ledger.duckdb");
    let ledger_arg = ledger.to_string_lossy().into_owned();
    let has_wal = python(&format!(
        "import duckdb, os\n\
         c = duckdb.connect({ledger_arg:?})\n\
         c.execute(\"CREATE TABLE ledger AS SELECT range AS id FROM range(1000)\")\n\
         c.execute(\"CHECKPOINT\")\n\
         c.execute(\"PRAGMA disable_checkpoint_on_shutdown\")\n\
         c.execute(\"SET wal_autocheckpoint='10GB'\")\n\
         c.execute(\"INSERT INTO ledger SELECT range + 1000 FROM range(500)\")\n\
         c.close()\n\
         print(os.path.exists({ledger_arg:?} + '.wal'))"
    ));
    assert_eq!(has_wal, "True", "the test needs a WAL beside the file");
    for suffix in ["", ".wal"] {
        std::fs::copy(
            format!("{ledger_arg}{suffix}"),
            format!("{}/ledger.duckdb{suffix}", snapshot.display()),
        )
        .expect("snapshot");
    }
    let restored = dir.path().join("restored.duckdb");
    let restored_arg = restored.to_string_lossy().into_owned();
    ok(restore(
        "duckdb",
        &format!("file://{}/ledger.duckdb", snapshot.display()),
        &restored_arg,
    ));
    let count = python(&format!(
        "import duckdb\nc = duckdb.connect({restored_arg:?}, read_only=True)\nprint(c.execute('SELECT count(*) FROM ledger').fetchone()[0])"
    ));
    assert_eq!(count, "1500", "the rows of the WAL too");
}
