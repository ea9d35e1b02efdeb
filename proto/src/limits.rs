//! Limits and defaults that more than one hop enforces: the edge rejects early, the
//! control plane and the agent check again, and all of them read the numbers here.
use std::time::Duration;

/// Largest handler or snippet source, in bytes (UTF-8).
pub const MAX_CODE_BYTES: usize = 256 * 1024;

/// Largest stdin of an execute, in bytes.
pub const MAX_STDIN_BYTES: usize = 256 * 1024;

/// The wall timeout of an execute or a call that names none; also the default maximum
/// an operator may raise or lower with `--max-timeout-ms`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// [`DEFAULT_TIMEOUT`] in milliseconds, as the wire carries it.
pub const DEFAULT_TIMEOUT_MS: u64 = DEFAULT_TIMEOUT.as_millis() as u64;

/// Shortest cluster join token accepted by every role.
pub const MIN_JOIN_TOKEN: usize = 16;

/// Checks a cluster join token: at least [`MIN_JOIN_TOKEN`] visible ASCII characters (it
/// travels in an `authorization` header). The message never echoes the token.
pub fn check_join_token(token: &str) -> Result<(), String> {
    if token.len() < MIN_JOIN_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("must be at least {MIN_JOIN_TOKEN} visible ASCII characters"));
    }
    Ok(())
}

/// Checks a source: not blank, and at most [`MAX_CODE_BYTES`]; the error names `field`.
pub fn check_code(field: &str, code: &str) -> Result<(), crate::WireError> {
    if code.trim().is_empty() {
        return Err(crate::WireError::invalid(field, "must not be empty"));
    }
    if code.len() > MAX_CODE_BYTES {
        let kib = MAX_CODE_BYTES / 1024;
        return Err(crate::WireError::invalid(field, format!("must be at most {MAX_CODE_BYTES} bytes ({kib} KiB)")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_tokens_are_long_visible_ascii() {
        assert!(check_join_token("0123456789abcdef").is_ok());
        for bad in ["short", "0123456789 abcdef", "0123456789abcdeé"] {
            let err = check_join_token(bad).unwrap_err();
            assert!(!err.contains(bad), "{err}");
        }
    }

    #[test]
    fn code_limit_is_inclusive_and_names_the_field() {
        assert!(check_code("code", &"x".repeat(MAX_CODE_BYTES)).is_ok());
        assert_eq!(check_code("code", " \n").unwrap_err().message, "must not be empty");
        let err = check_code("code", &"x".repeat(MAX_CODE_BYTES + 1)).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("code"));
        assert!(err.message.contains("256 KiB"), "{}", err.message);
    }
}
