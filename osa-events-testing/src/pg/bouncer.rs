//! [`PgBouncer`]: PgBouncer in transaction mode in front of a database, to test what such a
//! pooler breaks.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;

use super::FixtureError;
use super::binaries::{self, Tool};
use super::cluster::{create_temp_dir, free_port};
use super::command::{describe, tail};
use super::database::{password_bounds, path_bounds, redact};

/// The way out when pgbouncer cannot be found, installed or started.
const BOUNCER_HINT: &str =
    "install pgbouncer yourself (`apt-get install pgbouncer`, which puts it in /usr/sbin)";

/// The `pgbouncer` program, from Debian's package of the same name.
const PGBOUNCER: Tool = Tool {
    program: "pgbouncer",
    package: "pgbouncer",
    searched: "pgbouncer on PATH, /usr/sbin/pgbouncer, /usr/bin/pgbouncer",
    install_hint: BOUNCER_HINT,
    not_root_hint: "not running as root, so nothing was installed: install pgbouncer \
                    (`sudo apt-get install pgbouncer`)",
    installed_none_hint: "`apt-get install -y pgbouncer` succeeded but installed no pgbouncer binary",
};

/// How often [`PgBouncer::start_transaction_mode`] picks a new port when another process took
/// the last one.
const START_ATTEMPTS: u32 = 3;

/// How long pgbouncer may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Server connections pgbouncer opens at most for the database (`default_pool_size`).
const POOL_SIZE: u32 = 4;

/// Settings that do not depend on the database or the port (see the [`PgBouncer`] docs).
const SETTINGS: &str = "\
listen_addr = 127.0.0.1
unix_socket_dir =
auth_type = trust
pool_mode = transaction
min_pool_size = 0
reserve_pool_size = 0
server_round_robin = 0
server_reset_query =
ignore_startup_parameters = extra_float_digits
max_client_conn = 100
";

/// PgBouncer in transaction mode (`pool_mode = transaction`) in front of one database, as a child
/// process listening on a free port on 127.0.0.1, and killed on drop.
///
/// It is for tests of what a transaction-mode pooler does to session state (advisory locks,
/// prepared statements, `SET`): each transaction of a client, and each statement outside one,
/// may run on another server session. [`url`](Self::url) names the same database as the url it
/// was started with, through pgbouncer.
///
/// The configuration, written to [`dir`](Self::dir):
///
/// - one database entry: the url's database, host, port and user; the url's password, if any,
///   goes into the `auth_file`, which pgbouncer logs in to the server with;
/// - `auth_type = trust`, so clients need no password;
/// - `default_pool_size = 4` server connections (see [`pool_size`](Self::pool_size)), none
///   opened ahead (`min_pool_size = 0`), and reused most-recently-released first
///   (`server_round_robin = 0`);
/// - `server_reset_query` empty (transaction mode does not run it anyway);
/// - `ignore_startup_parameters = extra_float_digits`: sqlx sends `extra_float_digits` in its
///   startup packet, which pgbouncer 1.18 otherwise rejects ("unsupported startup parameter");
///   the other parameters sqlx sends (`DateStyle`, `client_encoding`, `TimeZone`,
///   `application_name`) are ones pgbouncer tracks itself. A connection that sets `options`
///   (e.g. `-c search_path=…`) is still rejected.
///
/// [`start_transaction_mode`](Self::start_transaction_mode) looks for `pgbouncer` on `PATH`,
/// then in `/usr/sbin` and `/usr/bin`. When it is missing and the process runs as root, it
/// installs the Debian `pgbouncer` package with `apt-get` first. pgbouncer refuses to run as
/// root, so a root process runs it with `-u postgres`, creating that user if needed.
///
/// # Examples
///
/// ```no_run
/// use osa_events_testing::pg::{PgBouncer, TestDatabase};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let db = TestDatabase::create().await?;
/// let bouncer = PgBouncer::start_transaction_mode(db.url())?;
/// let pooled = sqlx::PgPool::connect(bouncer.url()).await?; // the same database, pooled
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PgBouncer {
    /// The temporary directory: `pgbouncer.ini`, `userlist.txt` and `pgbouncer.log`.
    dir: PathBuf,
    /// The running pgbouncer.
    child: Child,
    /// The TCP port it listens on, on 127.0.0.1.
    port: u16,
    /// The database url through pgbouncer.
    url: String,
}

impl PgBouncer {
    /// Starts pgbouncer in transaction mode in front of the database that `database_url` names,
    /// installing pgbouncer first if needed (see the [type docs](Self)), and returns once it
    /// accepts connections. This blocks for a few tens of milliseconds (longer if it installs).
    ///
    /// # Errors
    ///
    /// A [`FixtureError`] saying what failed and what to do:
    /// [`InvalidUrl`](FixtureError::InvalidUrl) when `database_url` does not parse;
    /// [`PgBouncerNotFound`](FixtureError::PgBouncerNotFound) when there is no pgbouncer and it
    /// was not installed (not root, or the package installed none); the error of a failed
    /// `apt-get`; [`PgBouncerStart`](FixtureError::PgBouncerStart), with the end of its log,
    /// when pgbouncer exits or does not accept connections within 10 seconds. The temporary
    /// directory is removed in every case.
    pub fn start_transaction_mode(database_url: &str) -> Result<Self, FixtureError> {
        let upstream = Upstream::parse(database_url)?;
        let root = binaries::is_root();
        let program = PGBOUNCER.find_or_install(root, |tried, hint| {
            FixtureError::PgBouncerNotFound { tried, hint }
        })?;
        if root {
            binaries::ensure_postgres_user(
                "pgbouncer refuses to run as root and is run as the `postgres` user \
                 (`pgbouncer -u postgres`): create that user, or run as a regular user",
            )?;
        }
        let dir = create_temp_dir("osa-pgbouncer")?;
        match start_in(&dir, &program, root, &upstream) {
            Ok((child, port)) => Ok(Self {
                url: upstream.url_through(port),
                dir,
                child,
                port,
            }),
            Err(err) => {
                let _ = fs::remove_dir_all(&dir);
                Err(err)
            }
        }
    }

    /// The url of the same database through pgbouncer: the url it was started with, its user
    /// and password kept, with host and port replaced by `127.0.0.1:<port>` and its query
    /// (e.g. `sslmode`, which pgbouncer here does not offer) removed.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The TCP port pgbouncer listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many server connections pgbouncer opens at most for the database
    /// (`default_pool_size`). A test that pins server sessions with open transactions must
    /// leave one free for the client under test, or that client waits.
    pub fn pool_size(&self) -> u32 {
        POOL_SIZE
    }

    /// The temporary directory holding `pgbouncer.ini`, `userlist.txt` and `pgbouncer.log`. It
    /// is removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PgBouncer {
    /// Kills pgbouncer, which closes its client and server connections, and removes the
    /// directory. Failures are printed to stderr, not raised.
    fn drop(&mut self) {
        if let Err(err) = self.child.kill().and_then(|()| self.child.wait().map(drop)) {
            eprintln!(
                "osa-events-testing: could not stop pgbouncer (pid {}): {err}",
                self.child.id()
            );
        }
        if let Err(err) = fs::remove_dir_all(&self.dir)
            && err.kind() != io::ErrorKind::NotFound
        {
            eprintln!(
                "osa-events-testing: could not remove the pgbouncer directory {}: {err}",
                self.dir.display()
            );
        }
    }
}

/// The database pgbouncer forwards to, read from a url.
struct Upstream {
    /// The url it came from.
    url: String,
    /// A host name or address, or a unix socket directory.
    host: String,
    /// The server's port.
    port: u16,
    /// The database, which is also the name clients connect to through pgbouncer.
    database: String,
    /// The user, which clients connect as and pgbouncer logs in to the server as.
    user: String,
    /// The password, percent-decoded, if the url has one.
    password: Option<String>,
}

impl Upstream {
    /// Reads `url` as sqlx does (defaults from `PG*` variables and the OS user included).
    fn parse(url: &str) -> Result<Self, FixtureError> {
        let options: PgConnectOptions = url.parse().map_err(|source| FixtureError::InvalidUrl {
            url: redact(url),
            source,
        })?;
        let host = match options.get_socket() {
            Some(socket) => socket.to_string_lossy().into_owned(),
            None => options.get_host().to_owned(),
        };
        let user = options.get_username().to_owned();
        Ok(Self {
            url: url.to_owned(),
            host,
            port: options.get_port(),
            // As PostgreSQL, pgbouncer takes a missing database name to be the user's.
            database: options.get_database().unwrap_or(&user).to_owned(),
            user,
            password: password_bounds(url).map(|range| percent_decode(&url[range])),
        })
    }

    /// `pgbouncer.ini`, listening on `port`, with the user list at `auth_file`.
    fn config(&self, port: u16, auth_file: &Path) -> String {
        let mut ini = String::from("[databases]\n");
        let _ = writeln!(
            ini,
            "{} = host={} port={} dbname={} user={}",
            ini_name(&self.database),
            conn_value(&self.host),
            self.port,
            conn_value(&self.database),
            conn_value(&self.user),
        );
        ini.push_str("\n[pgbouncer]\n");
        ini.push_str(SETTINGS);
        let _ = writeln!(ini, "default_pool_size = {POOL_SIZE}");
        let _ = writeln!(ini, "listen_port = {port}");
        let _ = writeln!(ini, "auth_file = {}", auth_file.display());
        ini
    }

    /// `userlist.txt`: the user, and the password pgbouncer logs in to the server with.
    fn userlist(&self) -> String {
        let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        format!(
            "{} {}\n",
            quote(&self.user),
            quote(self.password.as_deref().unwrap_or(""))
        )
    }

    /// The url through pgbouncer on `port` (see [`PgBouncer::url`]).
    fn url_through(&self, port: u16) -> String {
        let url = &self.url;
        let authority_start = url.find("://").map_or(0, |i| i + 3);
        let (path_start, path_end) = path_bounds(url);
        let userinfo = url[authority_start..path_start]
            .rfind('@')
            .map_or("", |at| &url[authority_start..=authority_start + at]);
        format!(
            "postgres://{userinfo}127.0.0.1:{port}{}",
            &url[path_start..path_end]
        )
    }
}

/// Writes the configuration and starts pgbouncer in `dir` on a free port, retrying with a new
/// port when another process took the one picked in between.
fn start_in(
    dir: &Path,
    program: &Path,
    root: bool,
    upstream: &Upstream,
) -> Result<(Child, u16), FixtureError> {
    let write = |path: PathBuf, contents: String| {
        fs::write(&path, contents).map_err(|source| FixtureError::Io {
            action: "write",
            path,
            source,
        })
    };
    let ini = dir.join("pgbouncer.ini");
    let auth_file = dir.join("userlist.txt");
    let log_file = dir.join("pgbouncer.log");
    write(auth_file.clone(), upstream.userlist())?;
    let mut attempt = 1;
    loop {
        let port = free_port(BOUNCER_HINT)?;
        write(ini.clone(), upstream.config(port, &auth_file))?;
        // pgbouncer reads its files before it drops root, and logs to the inherited stderr: the
        // directory can stay private to this user.
        let log = File::create(&log_file)
            .and_then(|log| Ok((log.try_clone()?, log)))
            .map_err(|source| FixtureError::Io {
                action: "create",
                path: log_file.clone(),
                source,
            })?;
        let mut cmd = Command::new(program);
        if root {
            cmd.args(["-u", "postgres"]);
        }
        cmd.arg(&ini)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.0)
            .stderr(log.1);
        let mut child = cmd.spawn().map_err(|source| FixtureError::Spawn {
            command: describe(&cmd),
            source,
            hint: BOUNCER_HINT,
        })?;
        let reason = match wait_until_ready(&mut child, port) {
            Ok(()) => return Ok((child, port)),
            Err(reason) => reason,
        };
        let _ = child.kill();
        let _ = child.wait();
        let log = fs::read_to_string(&log_file).unwrap_or_default();
        if log.contains("Address already in use") && attempt < START_ATTEMPTS {
            attempt += 1;
            continue;
        }
        return Err(FixtureError::PgBouncerStart {
            command: describe(&cmd),
            port,
            reason,
            log_tail: tail(&log),
            hint: BOUNCER_HINT,
        });
    }
}

/// Waits until `child` accepts TCP connections on `port`; `Err` says why it never will.
/// pgbouncer binds before it listens and exits at once when it cannot bind, so an accepted
/// connection from a live `child` is its own.
fn wait_until_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let accepted = TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok();
        match child.try_wait() {
            Ok(Some(status)) => return Err(format!("it exited ({status})")),
            Ok(None) if accepted => return Ok(()),
            Ok(None) => {}
            Err(err) => return Err(format!("could not check on it: {err}")),
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "it did not accept connections within {} s",
                READY_TIMEOUT.as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A database name as a key of `[databases]`: bare when it is `[0-9A-Za-z_]+`, else quoted
/// like an SQL identifier.
fn ini_name(name: &str) -> String {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// A value of a database entry's connection string, single-quoted with `'` doubled.
fn conn_value(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `s` with `%XX` escapes decoded (a url's userinfo); invalid escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests;
