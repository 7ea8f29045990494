//! [`ThrowawayCluster`]: a private PostgreSQL server in a temporary directory.

use std::env;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use uuid::Uuid;

use super::FixtureError;
use super::binaries::{self, ServerBinaries};
use super::command::{describe, output_tail, run, tail};
use super::error::CLUSTER_HINT;

/// How often [`ThrowawayCluster::start`] picks a new port when another process took the last one.
const START_ATTEMPTS: u32 = 3;

/// Settings for a cluster that lives for one test run: speed over durability, and room for
/// many parallel tests with their own pools.
const TEST_SETTINGS: &str = "
# osa-events-testing: a throwaway cluster for tests; durability is off on purpose.
listen_addresses = '127.0.0.1'
fsync = off
full_page_writes = off
max_connections = 400
shared_buffers = 128MB
";

/// A throwaway PostgreSQL cluster: created in a temporary directory, listening on a free port on
/// 127.0.0.1, and stopped and deleted on drop.
///
/// [`start`](Self::start) uses the local server binaries (`pg_config --bindir`, else the highest
/// `/usr/lib/postgresql/<version>/bin`, else `initdb` and `pg_ctl` on `PATH`). When they are
/// missing and the process runs as root, it installs the Debian `postgresql` package with
/// `apt-get update && apt-get install -y postgresql` first. Since `initdb` and `postgres` refuse
/// to run as root, a root process runs them as the `postgres` system user (through
/// `runuser -u postgres --`), creating that user if needed.
///
/// The cluster trusts every local connection for the user `postgres`, and runs with `fsync`
/// and `full_page_writes` off: it is for tests only. Its data, log and unix socket live in
/// [`dir`](Self::dir).
///
/// Tests usually get a server from `DATABASE_URL` through [`TestDatabase`], which
/// `scripts/test.sh` provides; examples use [`database_url_or_throwaway`].
///
/// # Examples
///
/// ```no_run
/// use osa_events_testing::pg::ThrowawayCluster;
///
/// let cluster = ThrowawayCluster::start()?;
/// println!("connect to {}", cluster.url()); // postgres://postgres@127.0.0.1:<port>/postgres
/// drop(cluster); // stops the server and deletes its directory
/// # Ok::<(), osa_events_testing::pg::FixtureError>(())
/// ```
///
/// [`TestDatabase`]: super::TestDatabase
/// [`database_url_or_throwaway`]: super::database_url_or_throwaway
#[derive(Debug)]
pub struct ThrowawayCluster {
    /// The temporary directory: `data/`, `server.log` and the unix socket.
    dir: PathBuf,
    /// The `pg_ctl` that started the server, to stop it with.
    pg_ctl: PathBuf,
    /// Whether the server programs run as the `postgres` user (because we are root).
    as_postgres: bool,
    /// The TCP port, once started.
    port: u16,
    /// The connection url, once started.
    url: String,
    /// Whether the server was started and not yet stopped.
    running: bool,
}

impl ThrowawayCluster {
    /// Creates and starts a throwaway cluster, installing PostgreSQL first if needed (see the
    /// [type docs](Self)). This blocks for a second or two (longer if it installs).
    ///
    /// # Errors
    ///
    /// A [`FixtureError`] saying what failed and what to do: no server binaries (and not root,
    /// or the install failed), `initdb` failed, or the server did not start (with the end of its
    /// log). The temporary directory is removed in every case.
    pub fn start() -> Result<Self, FixtureError> {
        let root = binaries::is_root();
        let ServerBinaries { initdb, pg_ctl } = binaries::find_or_install(root)?;
        if root {
            binaries::ensure_postgres_user(
                "initdb refuses to run as root and needs a `postgres` user: create one, \
                 run as a regular user, or set DATABASE_URL to an existing server",
            )?;
        }
        let mut cluster = Self {
            dir: create_temp_dir("osa-pg")?,
            pg_ctl,
            as_postgres: root,
            port: 0,
            url: String::new(),
            running: false,
        };
        // From here on, an early return drops `cluster`, which removes the directory.
        if root {
            run(
                Command::new("chown").arg("postgres").arg(&cluster.dir),
                CLUSTER_HINT,
            )?;
        }
        cluster.init(&initdb)?;
        cluster.configure()?;
        cluster.start_server()?;
        Ok(cluster)
    }

    /// The url of the cluster's `postgres` database as the superuser `postgres`:
    /// `postgres://postgres@127.0.0.1:<port>/postgres`. Use it as an admin `DATABASE_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The TCP port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path of PostgreSQL's program `name` (`pg_dump`, `psql`, …) from the installation that
    /// runs this cluster, so client tools match the server's version.
    pub fn program(&self, name: &str) -> PathBuf {
        self.pg_ctl.with_file_name(name)
    }

    /// The temporary directory holding the cluster's data (`data/`), its log (`server.log`) and
    /// its unix socket. It is removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// A command running `program` in the cluster directory, as `postgres` when we are root.
    fn command(&self, program: &Path) -> Command {
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        };
        cmd.current_dir(&self.dir);
        cmd
    }

    /// Runs `initdb`. The C locale keeps it independent of the machine's `LANG` (which may name
    /// a locale that is not installed) and makes text ordering deterministic.
    fn init(&self, initdb: &Path) -> Result<(), FixtureError> {
        let mut cmd = self.command(initdb);
        cmd.arg("-D").arg(self.data_dir()).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        run(&mut cmd, CLUSTER_HINT).map(drop)
    }

    /// Appends [`TEST_SETTINGS`] and the socket directory to `postgresql.conf` (appending keeps
    /// the file's owner, which matters when we are root and the server runs as `postgres`).
    fn configure(&self) -> Result<(), FixtureError> {
        let conf = self.data_dir().join("postgresql.conf");
        let socket_dir = self
            .dir
            .to_string_lossy()
            .replace('\\', "\\\\")
            .replace('\'', "''");
        let settings = format!("{TEST_SETTINGS}unix_socket_directories = '{socket_dir}'\n");
        OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut file| file.write_all(settings.as_bytes()))
            .map_err(|source| FixtureError::Io {
                action: "append test settings to",
                path: conf,
                source,
            })
    }

    /// Starts the server with `pg_ctl -w` on a free port, retrying with a new port when another
    /// process took the one picked in between.
    fn start_server(&mut self) -> Result<(), FixtureError> {
        let mut attempt = 1;
        loop {
            let port = free_port(CLUSTER_HINT)?;
            let mut cmd = self.command(&self.pg_ctl);
            cmd.arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.log_file())
                .args(["-w", "-t", "60", "-o"])
                .arg(format!("-p {port}"))
                .arg("start");
            let output = cmd.output().map_err(|source| FixtureError::Spawn {
                command: describe(&cmd),
                source,
                hint: CLUSTER_HINT,
            })?;
            if output.status.success() {
                self.port = port;
                self.url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
                self.running = true;
                return Ok(());
            }
            // A start that timed out may have left a server behind.
            let _ = self.stop();
            let log = fs::read_to_string(self.log_file()).unwrap_or_default();
            let port_taken = log.contains("could not bind") || log.contains("already in use");
            if port_taken && attempt < START_ATTEMPTS {
                let _ = fs::File::create(self.log_file()); // truncate, keeping the owner
                attempt += 1;
                continue;
            }
            return Err(FixtureError::ServerStart {
                command: describe(&cmd),
                port,
                log_tail: if log.trim().is_empty() {
                    output_tail(&output)
                } else {
                    tail(&log)
                },
                hint: CLUSTER_HINT,
            });
        }
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`): its data is thrown away anyway.
    fn stop(&self) -> Result<(), FixtureError> {
        let mut cmd = self.command(&self.pg_ctl);
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"]);
        run(
            &mut cmd,
            "stop it with `pg_ctl stop` or kill its `postgres` process",
        )
        .map(drop)
    }
}

impl Drop for ThrowawayCluster {
    /// Stops the server and removes the directory. Failures are printed to stderr, not raised.
    fn drop(&mut self) {
        if self.running {
            self.running = false;
            if let Err(err) = self.stop() {
                eprintln!(
                    "osa-events-testing: could not stop the throwaway PostgreSQL cluster in {}: {err}",
                    self.dir.display()
                );
            }
        }
        if let Err(err) = fs::remove_dir_all(&self.dir)
            && err.kind() != io::ErrorKind::NotFound
        {
            eprintln!(
                "osa-events-testing: could not remove the throwaway PostgreSQL cluster directory {}: {err}",
                self.dir.display()
            );
        }
    }
}

/// Creates `$TMPDIR/<prefix>-<uuid>` with mode 0700.
pub(crate) fn create_temp_dir(prefix: &str) -> Result<PathBuf, FixtureError> {
    let dir = env::temp_dir().join(format!("{prefix}-{}", Uuid::new_v4().simple()));
    DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|source| FixtureError::Io {
            action: "create directory",
            path: dir.clone(),
            source,
        })?;
    Ok(dir)
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it for port 0); `hint` says
/// what to do when there is none.
pub(crate) fn free_port(hint: &'static str) -> Result<u16, FixtureError> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|source| FixtureError::NoFreePort { source, hint })
}

#[cfg(test)]
mod tests;
