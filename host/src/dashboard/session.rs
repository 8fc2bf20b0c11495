//! The dashboard's sessions: who logged in with the daemon's token, and from which
//! host name. It owns the session table and nothing else: the token is
//! [`crate::api`]'s, the cookie's attributes and the CSRF checks are `mod.rs`'s.
//!
//! A login that offers the right token gets a fresh random session id (32 bytes from
//! the operating system, in hex), which only the browser's cookie holds: the table keeps
//! its sha256, so a copy of the daemon's memory gives no usable cookie. A session is
//! bound to the `Host` the login came through (a page reached under another name, as a
//! DNS rebinding would, finds no session), lasts [`SESSION_LIFETIME`], and at most
//! [`MAX_SESSIONS`] live at once: a new login past that drops the oldest.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

use crate::api::Token;

/// How long a session lasts from its login.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// The most sessions kept at once.
pub const MAX_SESSIONS: usize = 64;

/// One logged-in browser.
struct Session {
    host: String,
    since: Instant,
    /// Logins in order (instants may tie).
    serial: u64,
}

/// The sessions, by the sha256 of their id.
pub struct Sessions {
    token: Token,
    table: Mutex<HashMap<[u8; 32], Session>>,
    logins: std::sync::atomic::AtomicU64,
}

impl Sessions {
    /// No session yet; logins must offer `token`.
    pub fn new(token: Token) -> Self {
        Self {
            token,
            table: Mutex::new(HashMap::new()),
            logins: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether `offered` is the daemon's token (compared in constant time).
    pub fn token_matches(&self, offered: &str) -> bool {
        self.token.matches(offered.trim().as_bytes())
    }

    /// A new session for a browser that reached the daemon as `host` and offered
    /// `offered`: its id (for the cookie), or `None` when the token is wrong.
    pub fn login(&self, offered: &str, host: &str) -> Option<String> {
        if !self.token_matches(offered) {
            return None;
        }
        let mut bytes = [0u8; 32];
        OsRng.try_fill_bytes(&mut bytes).ok()?;
        let id: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        let now = Instant::now();
        let mut table = self.lock();
        table.retain(|_, session| now.duration_since(session.since) < SESSION_LIFETIME);
        while table.len() >= MAX_SESSIONS {
            let oldest = table
                .iter()
                .min_by_key(|(_, session)| session.serial)
                .map(|(hash, _)| *hash);
            match oldest {
                Some(hash) => table.remove(&hash),
                None => break,
            };
        }
        table.insert(
            hash(&id),
            Session {
                host: host.to_owned(),
                since: now,
                serial: self
                    .logins
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            },
        );
        Some(id)
    }

    /// Whether `id` names a live session opened through `host`.
    pub fn check(&self, id: &str, host: &str) -> bool {
        let key = hash(id);
        let mut table = self.lock();
        match table.get(&key) {
            Some(session) if session.since.elapsed() >= SESSION_LIFETIME => {
                table.remove(&key);
                false
            }
            Some(session) => session.host == host,
            None => false,
        }
    }

    /// Ends session `id`, if there is one.
    pub fn logout(&self, id: &str) {
        self.lock().remove(&hash(id));
    }

    /// How many sessions are kept now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn sessions() -> Sessions {
        Sessions::new(Token::parse(TOKEN).unwrap())
    }

    #[test]
    fn only_the_token_opens_a_session_bound_to_its_host() {
        let sessions = sessions();
        assert_eq!(sessions.login("wrong", "127.0.0.1:80"), None);
        assert_eq!(sessions.login("", "127.0.0.1:80"), None);
        let id = sessions.login(TOKEN, "127.0.0.1:80").unwrap();
        assert_eq!(id.len(), 64);
        assert!(sessions.check(&id, "127.0.0.1:80"));
        assert!(!sessions.check(&id, "evil.example:80"), "another host name");
        assert!(
            !sessions.check(TOKEN, "127.0.0.1:80"),
            "the token is no session"
        );
        let other = sessions.login(TOKEN, "127.0.0.1:80").unwrap();
        assert_ne!(id, other, "each login its own id");
        sessions.logout(&id);
        assert!(!sessions.check(&id, "127.0.0.1:80"));
        assert!(sessions.check(&other, "127.0.0.1:80"));
    }

    #[test]
    fn past_the_limit_a_login_drops_the_oldest_session() {
        let sessions = sessions();
        let first = sessions.login(TOKEN, "h").unwrap();
        let ids: Vec<String> = (0..MAX_SESSIONS)
            .map(|_| sessions.login(TOKEN, "h").unwrap())
            .collect();
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(!sessions.check(&first, "h"), "the oldest went");
        assert!(ids.iter().all(|id| sessions.check(id, "h")));
    }
}
