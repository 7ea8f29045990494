//! [`DashboardOptions`]: who may use the dashboard, and what it lets them do.

use std::net::SocketAddr;
use std::time::Duration;

use crate::DashboardError;

/// How the dashboard is reached and what it allows. The default is the safe one: requests from
/// this machine only, every action available, a refresh every 5 s.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use osa_events::dashboard::DashboardOptions;
///
/// let options = DashboardOptions::new()
///     .token("a-long-random-secret-from-your-vault")
///     .read_only(true)
///     .refresh(Duration::from_secs(10));
/// ```
#[derive(Clone)]
pub struct DashboardOptions {
    pub(crate) access: Access,
    pub(crate) read_only: bool,
    pub(crate) refresh: Duration,
}

/// Who may use the dashboard.
#[derive(Clone)]
pub(crate) enum Access {
    /// Requests addressed to a loopback name (`localhost`, `127.0.0.1`, `[::1]`) only, and, when
    /// the server records peers (`ConnectInfo`), from a loopback peer only. The `Host` check
    /// stops another web site from reaching the dashboard through DNS rebinding.
    LocalOnly,
    /// Requests carrying the token: a bearer token, or the cookie the login page sets.
    Token(String),
    /// Whoever the application's own middleware lets through.
    Delegated,
}

impl DashboardOptions {
    /// The shortest token [`token`](Self::token) takes.
    pub const MIN_TOKEN_LEN: usize = 16;

    /// The defaults: local requests only, actions available, refresh every 5 s.
    pub fn new() -> Self {
        Self {
            access: Access::LocalOnly,
            read_only: false,
            refresh: Duration::from_secs(5),
        }
    }

    /// Requires `token` of every request: as `Authorization: Bearer <token>`, or once on the
    /// login page (or as `?token=` in a link), which sets an HTTP-only, same-site cookie. Needed
    /// to listen on an address other machines reach. A token shorter than
    /// [`MIN_TOKEN_LEN`](Self::MIN_TOKEN_LEN) is refused when the router is built.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.access = Access::Token(token.into());
        self
    }

    /// Trusts the application in front: no check of its own, for a router mounted behind the
    /// service's own authentication middleware. The CSRF protection of actions stays on.
    pub fn behind_own_auth(mut self) -> Self {
        self.access = Access::Delegated;
        self
    }

    /// Hides every action (pause, resume, retry, purge, reset) and refuses their requests: a
    /// dashboard for looking only.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// How often open pages refresh their figures (1 s to 5 min; JavaScript on).
    pub fn refresh(mut self, every: Duration) -> Self {
        self.refresh = every;
        self
    }

    /// Whether the dashboard hides its actions.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Checks the options, as building the router does.
    ///
    /// # Errors
    ///
    /// [`DashboardError::Options`] for a token that is too short or a refresh out of range.
    pub fn check(&self) -> Result<(), DashboardError> {
        if let Access::Token(token) = &self.access
            && token.trim().chars().count() < Self::MIN_TOKEN_LEN
        {
            return Err(DashboardError::Options(format!(
                "the dashboard's token must be at least {} characters, found {}",
                Self::MIN_TOKEN_LEN,
                token.trim().chars().count()
            )));
        }
        let range = Duration::from_secs(1)..=Duration::from_secs(300);
        if !range.contains(&self.refresh) {
            return Err(DashboardError::Options(format!(
                "the dashboard's refresh must be in 1s..=5m, found {}",
                humantime::format_duration(self.refresh)
            )));
        }
        Ok(())
    }

    /// Checks that these options may listen on `addr`: a loopback address always may; any
    /// other needs a token, since anyone who reaches it could otherwise retry and purge.
    ///
    /// # Errors
    ///
    /// [`DashboardError::Options`] naming the address and the way out.
    pub fn check_listen(&self, addr: SocketAddr) -> Result<(), DashboardError> {
        self.check()?;
        let protected = matches!(self.access, Access::Token(_));
        if addr.ip().is_loopback() || protected {
            return Ok(());
        }
        Err(DashboardError::Options(format!(
            "refusing to listen on {addr} without a token: other machines can reach that address \
             (set OSA_EVENTS_DASHBOARD_TOKEN or pass --token, or listen on 127.0.0.1)"
        )))
    }
}

impl Default for DashboardOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for DashboardOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        let access = match self.access {
            Access::LocalOnly => "local only",
            Access::Token(_) => "token",
            Access::Delegated => "behind the application's own auth",
        };
        f.debug_struct("DashboardOptions")
            .field("access", &access)
            .field("read_only", &self.read_only)
            .field("refresh", &self.refresh)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_token_is_refused() {
        let error = DashboardOptions::new().token("short").check().unwrap_err();
        assert_eq!(
            error.to_string(),
            "the dashboard's token must be at least 16 characters, found 5"
        );
    }

    #[test]
    fn only_loopback_listens_without_a_token() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let open: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(DashboardOptions::new().check_listen(local).is_ok());
        let error = DashboardOptions::new().check_listen(open).unwrap_err();
        assert!(error.to_string().contains("without a token"), "{error}");
        assert!(
            DashboardOptions::new()
                .token("0123456789abcdef")
                .check_listen(open)
                .is_ok()
        );
        // Trusting an application's middleware is not a token: `serve` alone has none.
        assert!(
            DashboardOptions::new()
                .behind_own_auth()
                .check_listen(open)
                .is_err()
        );
    }

    #[test]
    fn the_token_never_prints() {
        let printed = format!(
            "{:?}",
            DashboardOptions::new().token("0123456789abcdef-secret")
        );
        assert!(!printed.contains("secret"), "{printed}");
    }

    #[test]
    fn the_refresh_is_bounded() {
        let error = DashboardOptions::new()
            .refresh(Duration::from_millis(10))
            .check()
            .unwrap_err();
        assert!(error.to_string().contains("1s..=5m"), "{error}");
    }
}
