//! [`Partition`]: one TCP connection to PostgreSQL cut, as a failed network would cut it.

use std::path::PathBuf;
use std::process::Command;

use sqlx::PgPool;

use super::FixtureError;
use super::binaries::{self, Tool};
use super::command::run;

/// The comment on every rule, so that a rule left behind by a killed test can be found:
/// `iptables -S | grep osa-events-testing`.
const COMMENT: &str = "osa-events-testing partition";

/// The way out when a connection cannot be cut.
const PARTITION_HINT: &str = "cutting a connection needs root, iptables (`apt-get install \
     iptables`) and a kernel with netfilter";

/// `iptables`, for IPv4 connections.
const IPTABLES: Tool = Tool {
    program: "iptables",
    package: "iptables",
    searched: "iptables on PATH, /usr/sbin/iptables, /usr/bin/iptables",
    install_hint: PARTITION_HINT,
    not_root_hint: "not running as root, so nothing was installed (and no rule could be \
                    added): cutting a connection needs root",
    installed_none_hint: "`apt-get install -y iptables` succeeded but installed no iptables binary",
};

/// `ip6tables`, for IPv6 connections; from the same package.
const IP6TABLES: Tool = Tool {
    program: "ip6tables",
    searched: "ip6tables on PATH, /usr/sbin/ip6tables, /usr/bin/ip6tables",
    installed_none_hint: "`apt-get install -y iptables` succeeded but installed no ip6tables \
                          binary",
    ..IPTABLES
};

/// Finds the ends of a server session's connection, seen from the server.
const SESSION_SQL: &str = "select client_port, inet_server_port(), family(client_addr) \
     from pg_stat_activity where pid = $1";

/// One TCP connection between this machine and a PostgreSQL server, cut: every packet of it is
/// dropped, both ways, until [`heal`](Self::heal) or drop. Each end sees a silent peer, as when a
/// network between them fails or the client's machine loses power. Neither end sees the
/// connection close: the server notices only through TCP keepalives or `tcp_user_timeout` (as
/// a projection leader's session sets them), the client only through its own timeouts, or when
/// the partition heals and the server, having ended the session, answers with a reset.
///
/// For failover tests: cut the connection of the session that holds a lock, and measure how long
/// until another session gets it. The rules go into the `OUTPUT` and `INPUT` chains of this
/// machine, which must be the client's; the server may run here (loopback) or elsewhere. Linux
/// only; needs root, and installs the Debian `iptables` package with apt when `iptables` is
/// missing.
///
/// # Examples
///
/// ```no_run
/// use osa_events_testing::pg::Partition;
///
/// # async fn example(pool: sqlx::PgPool, leader_pid: i32) -> Result<(), Box<dyn std::error::Error>> {
/// let partition = Partition::cut_session(&pool, leader_pid).await?;
/// // ... wait for another process to take over ...
/// partition.heal()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Partition {
    program: PathBuf,
    /// The rules added, as `iptables` arguments after `-I`/`-D`, in the order added.
    added: Vec<Vec<String>>,
    /// What was cut, for messages.
    description: String,
}

impl Partition {
    /// Cuts the connection of the server session with process id `pid`. `pool` is any pool of
    /// the same server, used to look the session up in `pg_stat_activity`.
    ///
    /// # Errors
    ///
    /// [`Database`](FixtureError::Database) when the lookup fails;
    /// [`NotTcpSession`](FixtureError::NotTcpSession) when there is no such session or it is
    /// connected through a Unix socket; [`IptablesNotFound`](FixtureError::IptablesNotFound)
    /// or the error of a failed `apt-get` when `iptables` is missing; the error of a failed
    /// `iptables` (e.g. not root), after removing any rule already added.
    pub async fn cut_session(pool: &PgPool, pid: i32) -> Result<Self, FixtureError> {
        let ends: Option<(Option<i32>, Option<i32>, Option<i32>)> = sqlx::query_as(SESSION_SQL)
            .bind(pid)
            .fetch_optional(pool)
            .await
            .map_err(|source| {
                let options = pool.connect_options();
                FixtureError::Database {
                    action: format!("find server session {pid} in pg_stat_activity"),
                    url: format!("{}:{}", options.get_host(), options.get_port()),
                    source,
                }
            })?;
        let Some((Some(client), Some(server), family)) = ends else {
            return Err(FixtureError::NotTcpSession { pid });
        };
        let (Ok(client), Ok(server)) = (u16::try_from(client), u16::try_from(server)) else {
            return Err(FixtureError::NotTcpSession { pid });
        };
        Self::cut(server, client, family == Some(6))
    }

    /// Cuts the TCP connection between local port `client_port` and the server's port
    /// `server_port`, over IPv6 when `ipv6`, else IPv4.
    ///
    /// # Errors
    ///
    /// As [`cut_session`](Self::cut_session), after the lookup.
    pub fn cut(server_port: u16, client_port: u16, ipv6: bool) -> Result<Self, FixtureError> {
        let tool = if ipv6 { &IP6TABLES } else { &IPTABLES };
        let program = tool.find_or_install(binaries::is_root(), |tried, hint| {
            FixtureError::IptablesNotFound { tried, hint }
        })?;
        let mut partition = Self {
            program,
            added: Vec::new(),
            description: format!(
                "the connection from local port {client_port} to server port {server_port}"
            ),
        };
        // Packets to the server leave through OUTPUT; packets from it arrive through INPUT (on
        // loopback, after passing OUTPUT with the ports the other way round).
        for (chain, source, destination) in [
            ("OUTPUT", client_port, server_port),
            ("INPUT", server_port, client_port),
        ] {
            let rule = vec![
                chain.to_owned(),
                "-p".to_owned(),
                "tcp".to_owned(),
                "--sport".to_owned(),
                source.to_string(),
                "--dport".to_owned(),
                destination.to_string(),
                "-m".to_owned(),
                "comment".to_owned(),
                "--comment".to_owned(),
                COMMENT.to_owned(),
                "-j".to_owned(),
                "DROP".to_owned(),
            ];
            // On failure, drop removes the rules added so far.
            partition.iptables("-I", &rule)?;
            partition.added.push(rule);
        }
        Ok(partition)
    }

    /// Lets the connection's packets through again.
    ///
    /// # Errors
    ///
    /// The error of a failed `iptables -D`; the rules still in place are removed on drop, or
    /// by hand (they carry the comment `osa-events-testing partition`).
    pub fn heal(mut self) -> Result<(), FixtureError> {
        self.remove_rules()
    }

    fn remove_rules(&mut self) -> Result<(), FixtureError> {
        while let Some(rule) = self.added.last() {
            self.iptables("-D", rule)?;
            self.added.pop();
        }
        Ok(())
    }

    /// Runs `iptables -w 10 <action> <rule>`: `-w` waits for another process's rule change.
    fn iptables(&self, action: &str, rule: &[String]) -> Result<(), FixtureError> {
        let mut cmd = Command::new(&self.program);
        cmd.args(["-w", "10", action]).args(rule);
        run(&mut cmd, PARTITION_HINT).map(drop)
    }
}

impl Drop for Partition {
    /// Heals the partition if [`heal`](Self::heal) did not. Failures are printed to stderr, not
    /// raised.
    fn drop(&mut self) {
        if let Err(err) = self.remove_rules() {
            eprintln!(
                "osa-events-testing: could not heal the partition of {}: {err}; remove the rules \
                 commented `{COMMENT}` by hand",
                self.description
            );
        }
    }
}

#[cfg(test)]
mod tests;
