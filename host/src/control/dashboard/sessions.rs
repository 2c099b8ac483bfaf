//! The dashboard's logins: a bounded, in-memory map from a session cookie to its CSRF token.
//!
//! A session id is 32 random bytes sent once, in the `Set-Cookie` of a successful login; the
//! store keeps only its sha256, so what it holds cannot be replayed as a cookie. Sessions
//! expire after [`IDLE`] without a request, and past [`MAX_SESSIONS`] the least recently used
//! is forgotten, so no number of logins grows the store. A restart forgets every session:
//! logging in again is the cost, and nothing about a session ever touches the disk.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

/// How long a session lasts without a request.
pub const IDLE: Duration = Duration::from_secs(12 * 60 * 60);
/// Sessions kept at once; a new login beyond this forgets the least recently used.
pub const MAX_SESSIONS: usize = 64;

/// A new login: the cookie value for the browser, and the CSRF token for its page.
#[derive(Debug)]
pub struct NewSession {
    pub cookie: String,
    pub csrf: String,
}

struct Session {
    csrf: String,
    last_seen: Instant,
}

pub struct Sessions {
    /// By the sha256 of the cookie value.
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
    idle: Duration,
    max: usize,
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions::new(IDLE, MAX_SESSIONS)
    }
}

fn digest(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

impl Sessions {
    pub fn new(idle: Duration, max: usize) -> Sessions {
        Sessions {
            by_digest: Mutex::default(),
            idle,
            max: max.max(1),
        }
    }

    /// Starts a session at `now`, forgetting expired ones and, when full, the least recently
    /// used.
    pub fn create(&self, now: Instant) -> NewSession {
        let new = NewSession {
            cookie: hex::encode(rand::random::<[u8; 32]>()),
            csrf: hex::encode(rand::random::<[u8; 32]>()),
        };
        let mut sessions = self.lock();
        sessions.retain(|_, s| now.saturating_duration_since(s.last_seen) < self.idle);
        while sessions.len() >= self.max {
            let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(key, _)| *key)
            else {
                break;
            };
            sessions.remove(&oldest);
        }
        sessions.insert(
            digest(&new.cookie),
            Session {
                csrf: new.csrf.clone(),
                last_seen: now,
            },
        );
        new
    }

    /// The CSRF token of the live session `cookie` names, which this use keeps alive; an
    /// expired session is forgotten.
    pub fn find(&self, cookie: &str, now: Instant) -> Option<String> {
        let key = digest(cookie);
        let mut sessions = self.lock();
        let session = sessions.get_mut(&key)?;
        if now.saturating_duration_since(session.last_seen) >= self.idle {
            sessions.remove(&key);
            return None;
        }
        session.last_seen = session.last_seen.max(now);
        Some(session.csrf.clone())
    }

    pub fn remove(&self, cookie: &str) {
        self.lock().remove(&digest(cookie));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // A panic while holding this lock leaves a map that is still whole.
        self.by_digest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether `given` is the session's CSRF token, compared in constant time.
pub fn csrf_matches(expected: &str, given: &str) -> bool {
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_while_used_and_expires_when_idle() {
        let sessions = Sessions::new(Duration::from_secs(60), 8);
        let start = Instant::now();
        let new = sessions.create(start);
        assert_eq!(new.cookie.len(), 64);
        assert_ne!(new.cookie, new.csrf);
        assert_eq!(
            sessions.find(&new.cookie, start + Duration::from_secs(50)),
            Some(new.csrf.clone())
        );
        // Used at 50 s, so alive at 100 s; then idle for a minute, so gone.
        assert!(
            sessions
                .find(&new.cookie, start + Duration::from_secs(100))
                .is_some()
        );
        assert_eq!(
            sessions.find(&new.cookie, start + Duration::from_secs(160)),
            None
        );
        assert_eq!(sessions.len(), 0, "an expired session is forgotten");
        assert_eq!(sessions.find("not a session", start), None);
    }

    #[test]
    fn a_full_store_forgets_the_least_recently_used_session() {
        let sessions = Sessions::new(Duration::from_secs(3600), 3);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let a = sessions.create(at(0));
        let b = sessions.create(at(1));
        let c = sessions.create(at(2));
        // `a` is the oldest login but the most recently used.
        assert!(sessions.find(&a.cookie, at(3)).is_some());
        let d = sessions.create(at(4));
        assert_eq!(sessions.len(), 3);
        assert!(sessions.find(&b.cookie, at(5)).is_none(), "b was evicted");
        for kept in [&a, &c, &d] {
            assert!(sessions.find(&kept.cookie, at(5)).is_some());
        }
    }

    #[test]
    fn expired_sessions_make_room_before_live_ones_are_evicted() {
        let sessions = Sessions::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        let old = sessions.create(t0);
        let live = sessions.create(t0 + Duration::from_secs(8));
        let new = sessions.create(t0 + Duration::from_secs(12));
        assert!(
            sessions
                .find(&old.cookie, t0 + Duration::from_secs(12))
                .is_none()
        );
        assert!(
            sessions
                .find(&live.cookie, t0 + Duration::from_secs(12))
                .is_some()
        );
        assert!(
            sessions
                .find(&new.cookie, t0 + Duration::from_secs(12))
                .is_some()
        );
    }

    #[test]
    fn logout_forgets_the_session_and_only_the_exact_csrf_token_matches() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let new = sessions.create(now);
        assert!(csrf_matches(&new.csrf, &new.csrf));
        assert!(!csrf_matches(&new.csrf, &new.csrf[..63]));
        assert!(!csrf_matches(&new.csrf, ""));
        let mut wrong = new.csrf.clone().into_bytes();
        wrong[0] = if wrong[0] == b'a' { b'b' } else { b'a' };
        assert!(!csrf_matches(&new.csrf, &String::from_utf8(wrong).unwrap()));
        sessions.remove(&new.cookie);
        assert!(sessions.find(&new.cookie, now).is_none());
    }
}
