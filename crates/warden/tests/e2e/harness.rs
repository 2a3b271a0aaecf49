//! Starting and driving real `warden` processes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_warden");

/// A `warden` command with a clean environment (no user config, no inherited token).
pub fn warden() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("WARDEN_URL")
        .env_remove("WARDEN_TOKEN")
        .env_remove("WARDEN_DATA_DIR")
        .env("WARDEN_CLIENT_CONFIG", "/nonexistent/warden-client.toml")
        .env("WARDEN_LOG", "warn");
    c
}

pub struct Server {
    pub dir: TempDir,
    pub url: String,
    pub admin: String,
    /// Environment for client subcommands (e.g. `WARDEN_CA_CERT` for an HTTPS server).
    pub client_env: Vec<(String, String)>,
    child: Option<Child>,
}

/// `warden init --data-dir DIR --json`; returns the admin token.
pub fn init(dir: &Path) -> String {
    init_with(dir, &[])
}

/// [`init`] with extra environment variables (e.g. a PostgreSQL URL).
pub fn init_with(dir: &Path, env: &[(&str, &str)]) -> String {
    let out = warden()
        .args(["init", "--data-dir"])
        .arg(dir)
        .arg("--json")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["admin_token"].as_str().unwrap().to_owned()
}

/// Spawns `warden serve` on a free port; returns the child and its URL.
pub fn spawn(dir: &Path) -> (Child, String) {
    spawn_with(dir, &[])
}

/// [`spawn`] with extra environment variables (configuration).
pub fn spawn_with(dir: &Path, env: &[(&str, &str)]) -> (Child, String) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .unwrap();
    let mut child = warden()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("warden listening on ")
        .unwrap_or_else(|| {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            let tail: String = log
                .chars()
                .rev()
                .take(2000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            panic!("unexpected first line {line:?}; the server's log ends:\n{tail}")
        })
        .to_owned();
    (child, url)
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// A server with extra environment variables (configuration).
    pub fn start_with(env: &[(&str, &str)]) -> Server {
        // reqwest's rustls needs a process-wide crypto provider (tests use reqwest directly).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        // WARDEN_E2E_POSTGRES=1: the same tests with the registry on PostgreSQL (a new database
        // per server on the run's throwaway server), configured the way an operator would.
        if std::env::var("WARDEN_E2E_POSTGRES").is_ok_and(|v| v == "1") {
            let url = warden_store_conformance::pg::fresh_database();
            let example = include_str!("../../warden.example.toml");
            std::fs::write(
                dir.path().join("warden.toml"),
                format!("{example}\n[postgres]\nurl = \"{url}\"\n"),
            )
            .unwrap();
        }
        let admin = init(dir.path());
        let (child, url) = spawn_with(dir.path(), env);
        Server {
            dir,
            url,
            admin,
            client_env: Vec::new(),
            child: Some(child),
        }
    }

    /// A server process started elsewhere (e.g. one node of a cluster).
    pub fn from_parts(dir: TempDir, url: String, admin: String, child: Child) -> Server {
        Server {
            dir,
            url,
            admin,
            client_env: Vec::new(),
            child: Some(child),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, as a service manager stops it: a graceful shutdown. Waits for the exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let sent = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        c.wait().unwrap()
    }

    /// Starts the server again on the same data directory (after [`Server::stop`] or
    /// [`Server::kill9`]).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        let (child, url) = spawn(self.dir.path());
        self.child = Some(child);
        self.url = url;
    }

    pub fn restart(&mut self) {
        self.kill9();
        let (child, url) = spawn(self.dir.path());
        self.child = Some(child);
        self.url = url;
    }

    /// Runs a client subcommand with `token`.
    pub fn cli(&self, token: &str, args: &[&str]) -> Output {
        warden()
            .args(["--server", &self.url, "--token", token])
            .envs(self.client_env.iter().map(|(k, v)| (k, v)))
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs a client subcommand with `input` on its stdin.
    pub fn cli_stdin(&self, token: &str, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = warden()
            .args(["--server", &self.url, "--token", token])
            .envs(self.client_env.iter().map(|(k, v)| (k, v)))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs a client subcommand that must succeed; returns stdout.
    pub fn ok(&self, token: &str, args: &[&str]) -> String {
        let out = self.cli(token, args);
        assert!(
            out.status.success(),
            "warden {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a client subcommand with `--json` that must succeed; returns the parsed output.
    pub fn json(&self, token: &str, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(token, &a)).unwrap()
    }

    pub fn client(&self, token: &str) -> warden_client::Client {
        warden_client::Client::new(&self.url, token).unwrap()
    }

    /// Creates an operator and returns its token.
    pub fn operator(&self, name: &str, role: &str, teams: &[&str]) -> String {
        let mut args = vec!["operator", "create", name, "--role", role];
        for t in teams {
            args.extend(["--team", t]);
        }
        self.json(&self.admin, &args)["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Creates an identity with `scopes` in `team`, as `token`; returns its JSON.
    pub fn identity(&self, token: &str, name: &str, team: &str, scopes: &[&str]) -> Value {
        let mut args = vec![
            "identity",
            "create",
            "--name",
            name,
            "--kind",
            "service_account",
            "--owner",
            team,
            "--purpose",
            "Integration test identity",
            "--env",
            "prod",
        ];
        for s in scopes {
            args.extend(["--scope", s]);
        }
        self.json(token, &args)
    }

    /// Issues an API key for `identity`; returns (credential id, secret).
    pub fn api_key(&self, token: &str, identity: &str) -> (String, String) {
        let v = self.json(
            token,
            &[
                "credential",
                "issue",
                identity,
                "--type",
                "api_key",
                "--ttl",
                "1d",
            ],
        );
        (
            v["credential"]["id"].as_str().unwrap().to_owned(),
            v["secret"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn key_valid(&self, key: &str) -> bool {
        self.client(&self.admin)
            .verify_key(key)
            .await
            .unwrap()
            .valid
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The stderr of a failed command, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The PostgreSQL URL a server in `dir` uses (`WARDEN_E2E_POSTGRES=1` runs), if any.
pub fn pg_url(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("warden.toml")).ok()?;
    let (_, rest) = text.rsplit_once("[postgres]\nurl = \"")?;
    rest.split_once('"').map(|(u, _)| u.to_owned())
}

/// Everything the database of the server in `dir` holds, as text: a `pg_dump` on PostgreSQL,
/// the raw file bytes (database and WAL) on SQLite.
pub fn database_bytes(dir: &Path) -> Vec<u8> {
    match pg_url(dir) {
        Some(url) => {
            let out = Command::new("/usr/lib/postgresql/15/bin/pg_dump")
                .arg("--data-only")
                .arg(&url)
                .output()
                .unwrap();
            assert!(out.status.success(), "pg_dump: {}", stderr(&out));
            // Newer pg_dump brackets its output with a random `\restrict` key: not content.
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes()
        }
        None => {
            let mut all = Vec::new();
            for name in ["warden.db", "warden.db-wal"] {
                all.extend(std::fs::read(dir.join(name)).unwrap_or_default());
            }
            assert!(!all.is_empty(), "no database file in {}", dir.display());
            all
        }
    }
}
