//! Login throttling that an attacker cannot turn into a lockout: attempts are counted per
//! (account, client) pair, so guesses from one address block only that address for that
//! account; a much higher ceiling per account across every client stops a guessing
//! swarm, and a cap per client stops one address from trying many accounts.
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::throttle::Throttle;

/// Password checks one client may have per account per window before it is blocked.
pub const PAIR_LIMIT: u32 = 5;
/// Password checks per account per window across all clients.
pub const ACCOUNT_CEILING: u32 = 100;
/// Password checks per client per window across all accounts.
pub const CLIENT_LIMIT: u32 = 50;
/// The counting window.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

/// The three throttles a password check passes, in order: pair, account, client.
#[derive(Debug)]
pub struct LoginThrottle {
    pair: Throttle,
    account: Throttle,
    client: Throttle,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        let minute = Duration::from_secs(60);
        LoginThrottle {
            // Backs off from 1 to 15 minutes: only the guessing address waits.
            pair: Throttle::new(PAIR_LIMIT, WINDOW, minute, WINDOW),
            // A fixed window: a block lasts one window and then the count starts afresh, so
            // a trickle of requests cannot keep the account blocked.
            account: Throttle::new(ACCOUNT_CEILING, WINDOW, WINDOW, WINDOW),
            client: Throttle::new(CLIENT_LIMIT, WINDOW, minute, WINDOW),
        }
    }
}

/// The pair's key; the account's length in front keeps it unambiguous and lets
/// [`LoginThrottle::lift`] find every pair of one account by prefix.
fn pair_key(account: &str, client: &str) -> String {
    format!("{}:{account}{client}", account.len())
}

fn account_prefix(account: &str) -> String {
    format!("{}:{account}", account.len())
}

impl LoginThrottle {
    /// Counts one password check for `account` from `client` before it runs: `Err(seconds)`
    /// when any of the three is blocked, and then nothing stays counted.
    pub fn attempt(&self, account: &str, client: &str, now: DateTime<Utc>) -> Result<(), u64> {
        let pair = pair_key(account, client);
        self.pair.attempt(&pair, now)?;
        if let Err(secs) = self.account.attempt(account, now) {
            self.pair.undo(&pair);
            return Err(secs);
        }
        if let Err(secs) = self.client.attempt(client, now) {
            self.pair.undo(&pair);
            self.account.undo(account);
            return Err(secs);
        }
        Ok(())
    }

    /// Gives back a check that got no verdict.
    pub fn undo(&self, account: &str, client: &str) {
        self.pair.undo(&pair_key(account, client));
        self.account.undo(account);
        self.client.undo(client);
    }

    /// After a right password: the pair starts afresh and the check is given back to the
    /// account and the client.
    pub fn success(&self, account: &str, client: &str) {
        self.pair.success(&pair_key(account, client));
        self.account.undo(account);
        self.client.undo(client);
    }

    /// Lifts every block on `account` (a completed password reset): its ceiling and all
    /// its pairs start afresh.
    pub fn lift(&self, account: &str) {
        self.account.success(account);
        let prefix = account_prefix(account);
        self.pair.forget_matching(|k| k.starts_with(&prefix));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn one_address_cannot_lock_the_account_for_another() {
        let th = LoginThrottle::default();
        let now = t0();
        for _ in 0..PAIR_LIMIT {
            assert!(th.attempt("victim@x.y", "10.0.0.66", now).is_ok());
        }
        assert!(th.attempt("victim@x.y", "10.0.0.66", now).is_err(), "the attacker's pair is blocked");
        // The attacker keeps trying once every 15 minutes: only its own pair stays blocked.
        let later = now + chrono::Duration::minutes(15);
        let _ = th.attempt("victim@x.y", "10.0.0.66", later);
        assert!(th.attempt("victim@x.y", "10.0.0.7", later).is_ok(), "the owner elsewhere gets in");
    }

    #[test]
    fn the_account_ceiling_holds_across_clients_and_ends_with_its_window() {
        let th = LoginThrottle::default();
        let now = t0();
        let admitted = (0..1000).filter(|i| th.attempt("a@x.y", &format!("10.0.{}.{}", i / 250, i % 250), now).is_ok()).count();
        assert_eq!(admitted, ACCOUNT_CEILING as usize);
        let after = now + chrono::Duration::from_std(WINDOW).unwrap() + chrono::Duration::seconds(1);
        assert!(th.attempt("a@x.y", "10.9.9.9", after).is_ok(), "one window later the count starts afresh");
    }

    #[test]
    fn a_reset_lifts_every_block_of_the_account_only() {
        let th = LoginThrottle::default();
        let now = t0();
        for _ in 0..PAIR_LIMIT {
            th.attempt("a@x.y", "1.1.1.1", now).unwrap();
            th.attempt("a@x.yz", "1.1.1.1", now).unwrap();
        }
        assert!(th.attempt("a@x.y", "1.1.1.1", now).is_err());
        th.lift("a@x.y");
        assert!(th.attempt("a@x.y", "1.1.1.1", now).is_ok(), "lifted");
        assert!(th.attempt("a@x.yz", "1.1.1.1", now).is_err(), "another account that shares a prefix is not");
    }
}
