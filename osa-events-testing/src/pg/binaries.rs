//! Finding the PostgreSQL server binaries, and installing them with apt when running as root.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use super::FixtureError;
use super::command::run;
use super::error::INSTALL_HINT;

/// Where [`find`] looks, in order, for messages.
const SEARCHED: &str = "`pg_config --bindir`, /usr/lib/postgresql/*/bin, initdb and pg_ctl on PATH";

/// Serializes installing and user creation within this process (apt and dpkg hold their own
/// locks across processes, and `apt-get` is told to wait for them).
static SETUP: Mutex<()> = Mutex::new(());

/// The two server programs a throwaway cluster needs; `initdb` finds `postgres` next to itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerBinaries {
    /// Creates the cluster.
    pub(crate) initdb: PathBuf,
    /// Starts and stops it.
    pub(crate) pg_ctl: PathBuf,
}

impl ServerBinaries {
    /// The binaries in `dir`, if both are there.
    fn in_dir(dir: &Path) -> Option<Self> {
        let initdb = dir.join("initdb");
        let pg_ctl = dir.join("pg_ctl");
        (initdb.is_file() && pg_ctl.is_file()).then_some(Self { initdb, pg_ctl })
    }
}

/// Finds the server binaries; when they are missing and `root` is true, installs the Debian
/// `postgresql` package first.
///
/// # Errors
///
/// [`FixtureError::BinariesNotFound`] when they are missing and cannot be installed, or the
/// error of a failed `apt-get`.
pub(crate) fn find_or_install(root: bool) -> Result<ServerBinaries, FixtureError> {
    if let Some(found) = find() {
        return Ok(found);
    }
    if !root {
        return Err(FixtureError::BinariesNotFound {
            tried: SEARCHED.to_owned(),
            hint: "not running as root, so nothing was installed: install postgresql \
                   (`sudo apt-get install postgresql`) or set DATABASE_URL to an existing server",
        });
    }
    apt_install("postgresql", SEARCHED, find, INSTALL_HINT)?.ok_or_else(|| {
        FixtureError::BinariesNotFound {
            tried: SEARCHED.to_owned(),
            hint: "`apt-get install -y postgresql` succeeded but installed no server binaries; \
                   set DATABASE_URL to an existing server",
        }
    })
}

/// Installs the Debian `package` with `apt-get update && apt-get install -y <package>`, then
/// returns what `find` finds. Call it as root, after `find` came up empty: it serializes
/// installs within this process and looks again first, in case another thread installed the
/// package meanwhile. `searched` (where `find` looks) and `hint` (what to do when apt fails)
/// are for messages.
///
/// # Errors
///
/// The error of a failed `apt-get`, with `hint`.
fn apt_install<T>(
    package: &str,
    searched: &str,
    find: impl Fn() -> Option<T>,
    hint: &'static str,
) -> Result<Option<T>, FixtureError> {
    let _guard = SETUP
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(found) = find() {
        return Ok(Some(found)); // another thread installed it while we waited
    }
    eprintln!(
        "osa-events-testing: {package} not found ({searched}); \
         installing it with `apt-get update && apt-get install -y {package}`"
    );
    apt_get(&["update"], hint)?;
    apt_get(&["install", "-y", package], hint)?;
    Ok(find())
}

/// Runs `apt-get <args>` non-interactively, waiting for the dpkg lock if another apt holds it.
fn apt_get(args: &[&str], hint: &'static str) -> Result<(), FixtureError> {
    let mut cmd = Command::new("apt-get");
    cmd.args(["-q", "-o", "DPkg::Lock::Timeout=300"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run(&mut cmd, hint).map(drop)
}

/// Finds the server binaries: `pg_config --bindir`, else the highest
/// `/usr/lib/postgresql/<version>/bin` (Debian's layout), else `initdb` and `pg_ctl` on `PATH`.
pub(crate) fn find() -> Option<ServerBinaries> {
    from_pg_config()
        .or_else(|| highest_versioned_dir(Path::new("/usr/lib/postgresql")))
        .or_else(on_path)
}

/// The binaries in `pg_config --bindir`. On Debian with only `libpq-dev`, that is `/usr/bin`,
/// which has no server binaries: hence the check that both exist.
fn from_pg_config() -> Option<ServerBinaries> {
    let output = Command::new("pg_config").arg("--bindir").output().ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    ServerBinaries::in_dir(Path::new(dir.trim()))
}

/// The binaries in `<root>/<version>/bin` for the highest version that has them.
fn highest_versioned_dir(root: &Path) -> Option<ServerBinaries> {
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = parse_version(entry.file_name().to_str()?)?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions
        .iter()
        .rev()
        .find_map(|(_, bin)| ServerBinaries::in_dir(bin))
}

/// `"15"` → `[15]`, `"9.6"` → `[9, 6]`; anything else is not a version directory.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

/// `initdb` and `pg_ctl` from the first `PATH` entries that have them.
fn on_path() -> Option<ServerBinaries> {
    let path = env::var_os("PATH")?;
    let which = |name: &str| {
        env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    };
    Some(ServerBinaries {
        initdb: which("initdb")?,
        pg_ctl: which("pg_ctl")?,
    })
}

/// A helper program a fixture runs (`pgbouncer`, `iptables`), and the Debian package that has it.
pub(crate) struct Tool {
    /// The program's file name.
    pub(crate) program: &'static str,
    /// The Debian package to install when it is missing.
    pub(crate) package: &'static str,
    /// Where [`Tool::find`] looks, in order, for messages.
    pub(crate) searched: &'static str,
    /// What to do when `apt-get` fails.
    pub(crate) install_hint: &'static str,
    /// What to do when it is missing and the process is not root.
    pub(crate) not_root_hint: &'static str,
    /// What to do when the package installed no such program.
    pub(crate) installed_none_hint: &'static str,
}

impl Tool {
    /// The program from the first `PATH` entry that has it, else `/usr/sbin` (Debian's place for
    /// administration tools, often not on a regular user's `PATH`), else `/usr/bin`.
    pub(crate) fn find(&self) -> Option<PathBuf> {
        let on_path = env::var_os("PATH").into_iter().flat_map(|path| {
            env::split_paths(&path)
                .map(|dir| dir.join(self.program))
                .collect::<Vec<_>>()
        });
        on_path
            .chain(["/usr/sbin", "/usr/bin"].map(|dir| Path::new(dir).join(self.program)))
            .find(|candidate| candidate.is_file())
    }

    /// [`find`](Self::find), else, when `root`, installs the package with apt and looks again.
    /// `not_found(searched, hint)` is the fixture's error for a program that is still missing.
    ///
    /// # Errors
    ///
    /// `not_found`'s error, or the error of a failed `apt-get`.
    pub(crate) fn find_or_install(
        &self,
        root: bool,
        not_found: impl Fn(String, &'static str) -> FixtureError,
    ) -> Result<PathBuf, FixtureError> {
        if let Some(found) = self.find() {
            return Ok(found);
        }
        if !root {
            return Err(not_found(self.searched.to_owned(), self.not_root_hint));
        }
        apt_install(
            self.package,
            self.searched,
            || self.find(),
            self.install_hint,
        )?
        .ok_or_else(|| not_found(self.searched.to_owned(), self.installed_none_hint))
    }
}

/// Whether this process runs with effective user id 0, which `initdb`, `pg_ctl` and `postgres`
/// refuse. Reads `/proc/self/status`, else asks `id -u`.
pub(crate) fn is_root() -> bool {
    if let Ok(status) = fs::read_to_string("/proc/self/status")
        && let Some(euid) = effective_uid(&status)
    {
        return euid == "0";
    }
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"0")
}

/// The effective uid from `/proc/self/status`: the second field of `Uid:` (real, effective,
/// saved, filesystem).
fn effective_uid(status: &str) -> Option<&str> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
}

/// Makes sure the `postgres` system user exists (the `postgresql` package creates it), so a
/// process running as root can run the server binaries, or pgbouncer, as that user.
///
/// # Errors
///
/// The error of a failed `useradd`, with `hint`.
pub(crate) fn ensure_postgres_user(hint: &'static str) -> Result<(), FixtureError> {
    let exists = || {
        Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if exists() {
        return Ok(());
    }
    let _guard = SETUP
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if exists() {
        return Ok(());
    }
    let mut cmd = Command::new("useradd");
    cmd.args([
        "--system",
        "--no-user-group",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        "postgres",
    ]);
    run(&mut cmd, hint).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_version_accepts_only_dotted_numbers() {
        assert_eq!(parse_version("15"), Some(vec![15]));
        assert_eq!(parse_version("9.6"), Some(vec![9, 6]));
        assert_eq!(parse_version("lib"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn highest_versioned_dir_picks_the_newest_complete_install() {
        let root = env::temp_dir().join(format!("osa-bin-{}", uuid::Uuid::new_v4().simple()));
        for (version, complete) in [("9.6", true), ("15", true), ("16", false), ("notes", true)] {
            let bin = root.join(version).join("bin");
            fs::create_dir_all(&bin).unwrap();
            fs::write(bin.join("initdb"), "").unwrap();
            if complete {
                fs::write(bin.join("pg_ctl"), "").unwrap();
            }
        }
        let found = highest_versioned_dir(&root);
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(found.unwrap().initdb, root.join("15/bin/initdb"));
    }

    #[test]
    fn effective_uid_is_the_second_uid_field() {
        let status = "Name:\tcargo\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(effective_uid(status), Some("0"));
        assert_eq!(effective_uid("Name:\tcargo\n"), None);
    }
}
