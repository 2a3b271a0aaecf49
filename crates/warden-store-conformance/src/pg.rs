//! Throwaway PostgreSQL servers for tests: `initdb` into a temporary directory, a free loopback
//! port, trust authentication for the user `warden`, stopped when dropped.
//!
//! `./.ci/run` starts one server for the whole run and exports `WARDEN_TEST_PG=127.0.0.1:PORT`;
//! [`fresh_database`] creates a new database on it per test. Without that variable (a plain
//! `cargo test`), the first test starts a private server, which a watchdog process stops when the
//! test process exits. Tests that need a server of their own (to stop and restart it) use
//! [`PgServer::start`].
//!
//! PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the PostgreSQL server binaries are (`initdb` is not on `PATH` on every system).
fn bin(name: &str) -> PathBuf {
    for dir in ["/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(name)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command run as the user that owns the server (`postgres` when we are root).
fn server_command(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut c: Command, what: &str) {
    let out = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A PostgreSQL server of the test's own.
pub struct PgServer {
    pub port: u16,
    data: PathBuf,
    /// Extra server options (`-c name=value ...`).
    extra: String,
    _dir: tempfile::TempDir,
}

impl PgServer {
    /// `initdb` into a new temporary directory and start on a free port.
    pub fn start() -> PgServer {
        let server = PgServer::init();
        server.resume();
        server
    }

    /// A server that accepts TCP connections only over TLS, with this certificate and key (PEM).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> PgServer {
        let mut server = PgServer::init();
        std::fs::write(server.data.join("server.crt"), cert_pem).expect("server.crt");
        std::fs::write(server.data.join("server.key"), key_pem).expect("server.key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            server.data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod server.key");
        if is_root() {
            let mut c = Command::new("chown");
            c.arg("postgres:postgres")
                .arg(server.data.join("server.crt"))
                .arg(server.data.join("server.key"));
            run(c, "chown");
        }
        // pg_hba.conf keeps its owner when rewritten in place.
        std::fs::write(
            server.data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .expect("pg_hba.conf");
        server.extra = "-c ssl=on".into();
        server.resume();
        server
    }

    /// A server whose TCP logins need a password (SCRAM): the superuser `warden` has
    /// `password`. For tests of logins Warden creates and rotates (trust would accept any
    /// password).
    pub fn start_with_password(password: &str) -> PgServer {
        let server = PgServer::init_with(Some(password));
        server.resume();
        server
    }

    fn init() -> PgServer {
        PgServer::init_with(None)
    }

    fn init_with(password: Option<&str>) -> PgServer {
        let dir = tempfile::Builder::new()
            .prefix("warden-pg-")
            .tempdir()
            .expect("a temporary directory");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("the data directory");
        if is_root() {
            let mut c = Command::new("chown");
            c.args(["-R", "postgres:postgres"]).arg(dir.path());
            run(c, "chown");
        }
        let mut c = server_command(&bin("initdb"));
        c.arg("-D").arg(&data);
        match password {
            None => {
                c.args(["-U", "warden", "--auth=trust"]);
            }
            Some(pw) => {
                let pwfile = dir.path().join("pwfile");
                std::fs::write(&pwfile, pw).expect("pwfile");
                if is_root() {
                    let mut o = Command::new("chown");
                    o.arg("postgres:postgres").arg(&pwfile);
                    run(o, "chown");
                }
                c.args([
                    "-U",
                    "warden",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                ])
                .arg(format!("--pwfile={}", pwfile.display()));
            }
        }
        c.args(["-E", "UTF8", "--no-sync", "--locale=C"]);
        run(c, "initdb");
        PgServer {
            port: free_port(),
            data,
            extra: String::new(),
            _dir: dir,
        }
    }

    /// Starts the server again after [`PgServer::stop`], on the same port.
    pub fn resume(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections=300 \
             -c fsync=off -c full_page_writes=off {}",
            self.port,
            self.data.display(),
            self.extra
        );
        let mut c = server_command(&bin("pg_ctl"));
        c.arg("-D")
            .arg(&self.data)
            .args(["-w", "-l"])
            .arg(self.data.join("server.log"))
            .args(["-o", &opts, "start"]);
        run(c, "pg_ctl start");
    }

    /// Stops the server (`fast`: open connections are closed at once).
    pub fn stop(&self) {
        let mut c = server_command(&bin("pg_ctl"));
        c.arg("-D")
            .arg(&self.data)
            .args(["-w", "-m", "fast", "stop"]);
        run(c, "pg_ctl stop");
    }

    /// Runs SQL as the superuser over the server's local socket (trust), e.g. to set up roles.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(bin("psql"))
            .arg("-h")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-U", "warden", "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A new empty database on this server; its connection URL.
    pub fn create_database(&self) -> String {
        create_database(&self.addr())
    }

    /// A new empty database on a TLS-only server ([`PgServer::start_tls`]); its URL without
    /// `sslmode` (created over the server's local socket).
    pub fn create_database_tls(&self) -> String {
        let name = format!("t_{}", uuid::Uuid::now_v7().simple());
        let mut c = Command::new(bin("createdb"));
        c.arg("-h")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-U", "warden", &name]);
        run(c, "createdb");
        format!("postgres://warden@{}/{name}", self.addr())
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let mut c = server_command(&bin("pg_ctl"));
        c.arg("-D")
            .arg(&self.data)
            .args(["-w", "-m", "immediate", "stop"]);
        let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

/// The connection URL of database `db` on `addr` (`host:port`).
pub fn url(addr: &str, db: &str) -> String {
    format!("postgres://warden@{addr}/{db}?sslmode=disable")
}

fn create_database(addr: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "t_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        uuid::Uuid::now_v7().simple()
    );
    let (host, port) = addr.rsplit_once(':').expect("WARDEN_TEST_PG is host:port");
    let mut c = Command::new(bin("createdb"));
    c.args(["-h", host, "-p", port, "-U", "warden", &name]);
    run(c, "createdb");
    url(addr, &name)
}

/// The server shared by the tests of this run: `WARDEN_TEST_PG`, or one started for this
/// process (stopped by a watchdog when the process exits).
pub fn shared() -> &'static str {
    static ADDR: OnceLock<String> = OnceLock::new();
    ADDR.get_or_init(|| {
        if let Ok(a) = std::env::var("WARDEN_TEST_PG")
            && !a.is_empty()
        {
            return a;
        }
        let server = PgServer::start();
        let addr = server.addr();
        let stop = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {ctl} -D {data} -m immediate stop; rm -rf {dir}",
            pid = std::process::id(),
            ctl = if is_root() {
                format!("runuser -u postgres -- {}", bin("pg_ctl").display())
            } else {
                bin("pg_ctl").display().to_string()
            },
            data = server.data.display(),
            dir = server._dir.path().display(),
        );
        let _ = Command::new("sh")
            .args(["-c", &stop])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        // The watchdog owns the server from here on.
        std::mem::forget(server);
        addr
    })
}

/// A new empty database on the shared server; its connection URL.
pub fn fresh_database() -> String {
    create_database(shared())
}
