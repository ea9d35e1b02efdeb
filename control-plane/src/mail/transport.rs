//! Sends rendered mails through lettre: to an SMTP server (plain, STARTTLS or implicit
//! TLS, pooled connections) or as .eml files in a directory. Never shows the SMTP password.
use std::{fmt, path::Path, time::Duration};

use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::{AsyncSmtpTransportBuilder as SmtpTransportBuilder, PoolConfig},
};

use super::templates::Rendered;

/// Bound on connecting and on each SMTP command.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on a whole send, however many commands it takes.
const SEND_DEADLINE: Duration = Duration::from_secs(30);
/// Most SMTP connections kept open at once.
const POOL_MAX: u32 = 4;
/// How long an idle SMTP connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// Where mail goes.
pub struct Mailer {
    from: Mailbox,
    transport: Transport,
}

enum Transport {
    Smtp { inner: AsyncSmtpTransport<Tokio1Executor>, endpoint: String },
    File { inner: AsyncFileTransport<Tokio1Executor>, dir: String },
}

/// Why mail could not be set up or sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// A bad SMTP URL, sender or recipient address, or directory.
    #[error("mail configuration: {0}")]
    Config(String),
    /// The server refused the mail, could not be reached, or the file could not be written.
    #[error("mail send: {0}")]
    Send(String),
}

impl Mailer {
    /// SMTP from a URL: smtp://[user:pass@]host[:port] (plain, or STARTTLS when the URL has
    /// ?tls=required or ?tls=opportunistic; port 25 or 587 by default), smtps://… (implicit
    /// TLS, port 465 by default). Connections are pooled and time out after 10 s. Must be
    /// called inside a Tokio runtime (the pool starts a background task). No error message
    /// and no Debug output contains the password.
    pub fn smtp(url: &str, from: &str) -> Result<Self, MailError> {
        let from = parse_mailbox("sender", from)?;
        let (builder, parts) = smtp_builder(url)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(MailError::Config("SMTP mail needs a running Tokio runtime".into()));
        }
        let inner = builder
            .timeout(Some(SMTP_TIMEOUT))
            .pool_config(PoolConfig::new().max_size(POOL_MAX).idle_timeout(POOL_IDLE))
            .build();
        let endpoint = parts.endpoint();
        tracing::debug!(mailer = %endpoint, "SMTP mailer ready");
        Ok(Self { from, transport: Transport::Smtp { inner, endpoint } })
    }

    /// Writes each mail as an .eml file under `dir` (created if missing) — lettre's AsyncFileTransport.
    pub fn file(dir: &Path, from: &str) -> Result<Self, MailError> {
        let from = parse_mailbox("sender", from)?;
        std::fs::create_dir_all(dir)
            .map_err(|e| MailError::Config(format!("mail directory {}: {e}", dir.display())))?;
        let inner = AsyncFileTransport::<Tokio1Executor>::new(dir);
        Ok(Self { from, transport: Transport::File { inner, dir: dir.display().to_string() } })
    }

    /// Sends one mail (multipart/alternative: text/plain + text/html, UTF-8) to `to`.
    /// A bad `to` is `Config` (retrying will not help); anything on the way is `Send`.
    /// Logs only at debug level: the caller knows what the mail was and logs the outcome.
    pub async fn send(&self, to: &str, mail: &Rendered) -> Result<(), MailError> {
        let recipient = parse_mailbox("recipient", to)?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(recipient)
            .subject(mail.subject.as_str())
            .message_id(None)
            .multipart(MultiPart::alternative_plain_html(mail.text.clone(), mail.html.clone()))
            .map_err(|e| MailError::Config(format!("building the message: {e}")))?;
        let sent = match &self.transport {
            Transport::Smtp { inner, .. } => {
                match tokio::time::timeout(SEND_DEADLINE, inner.send(message)).await {
                    Ok(result) => result.map(drop).map_err(|e| MailError::Send(e.to_string())),
                    Err(_) => Err(MailError::Send(format!(
                        "no answer within {} s",
                        SEND_DEADLINE.as_secs()
                    ))),
                }
            }
            Transport::File { inner, .. } => {
                inner.send(message).await.map(drop).map_err(|e| MailError::Send(e.to_string()))
            }
        };
        match &sent {
            Ok(()) => tracing::debug!(mailer = %self.describe(), to, "mail sent"),
            Err(error) => tracing::debug!(mailer = %self.describe(), to, %error, "mail not sent"),
        }
        sent
    }

    /// A short description for logs with no secrets: "smtp://host:port" or "files in DIR".
    pub fn describe(&self) -> String {
        match &self.transport {
            Transport::Smtp { endpoint, .. } => endpoint.clone(),
            Transport::File { dir, .. } => format!("files in {dir}"),
        }
    }
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Mailer").field(&self.describe()).finish()
    }
}

/// Checks an SMTP URL as [`Mailer::smtp`] reads it, without connecting and without a
/// runtime; the error never holds the password.
pub fn check_smtp_url(url: &str) -> Result<(), MailError> {
    smtp_builder(url).map(drop)
}

/// Checks a sender address as [`Mailer`] reads it.
pub fn check_sender(from: &str) -> Result<(), MailError> {
    parse_mailbox("sender", from).map(drop)
}

/// lettre's builder for an `smtp://` or `smtps://` URL, and the URL's loggable parts.
fn smtp_builder(url: &str) -> Result<(SmtpTransportBuilder, UrlParts<'_>), MailError> {
    let parts = UrlParts::of(url);
    if !matches!(parts.scheme, "smtp" | "smtps") {
        return Err(MailError::Config("SMTP URL: must start with smtp:// or smtps://".into()));
    }
    let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        .map_err(|e| MailError::Config(format!("SMTP URL: {}", parts.redact(&e.to_string()))))?;
    Ok((builder, parts))
}

fn parse_mailbox(role: &str, address: &str) -> Result<Mailbox, MailError> {
    address
        .trim()
        .parse::<Mailbox>()
        .map_err(|e| MailError::Config(format!("bad {role} address {address:?}: {e}")))
}

/// The pieces of an SMTP URL that logs may show, and the userinfo that they must not.
struct UrlParts<'a> {
    scheme: &'a str,
    userinfo: &'a str,
    hostport: &'a str,
    tls: Option<&'a str>,
}

impl<'a> UrlParts<'a> {
    fn of(url: &'a str) -> Self {
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, q),
            None => (rest, ""),
        };
        let before_query = before_query.split('#').next().unwrap_or_default();
        let (userinfo, host_and_path) = match before_query.rfind('@') {
            Some(at) => (&before_query[..at], &before_query[at + 1..]),
            None => ("", before_query),
        };
        let hostport = host_and_path.split('/').next().unwrap_or_default();
        let tls = query.split(['&', '#']).find_map(|pair| pair.strip_prefix("tls="));
        Self { scheme, userinfo, hostport, tls }
    }

    /// `text` with the userinfo and the password taken out.
    fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        if !self.userinfo.is_empty() {
            out = out.replace(self.userinfo, "***");
            if let Some((_, password)) = self.userinfo.split_once(':')
                && !password.is_empty()
            {
                out = out.replace(password, "***");
            }
        }
        out
    }

    /// "scheme://host:port", with the port lettre would pick when the URL has none, and
    /// "?tls=…" when STARTTLS was asked for.
    fn endpoint(&self) -> String {
        let (host, port) = split_host_port(self.hostport);
        let default = match (self.scheme, self.tls) {
            ("smtps", _) => 465,
            (_, Some(_)) => 587,
            _ => 25,
        };
        let port = port.unwrap_or_else(|| default.to_string());
        match self.tls {
            Some(tls) if self.scheme == "smtp" => format!("smtp://{host}:{port}?tls={tls}"),
            _ => format!("{}://{host}:{port}", self.scheme),
        }
    }
}

/// Splits "host:port" or "[v6]:port"; the port is None when absent.
fn split_host_port(hostport: &str) -> (&str, Option<String>) {
    let (host, port) = if hostport.starts_with('[') {
        match hostport.find(']') {
            Some(end) => (&hostport[..=end], hostport[end + 1..].strip_prefix(':')),
            None => (hostport, None),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    (host, port.filter(|p| !p.is_empty()).map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn describes_endpoints_without_secrets() {
        let cases = [
            ("smtp://127.0.0.1:2525", "smtp://127.0.0.1:2525"),
            ("smtp://mail.example.com", "smtp://mail.example.com:25"),
            (
                "smtp://u:p%40ss@mail.example.com?tls=required",
                "smtp://mail.example.com:587?tls=required",
            ),
            (
                "smtp://u:pw@mail.example.com:2587?tls=opportunistic",
                "smtp://mail.example.com:2587?tls=opportunistic",
            ),
            ("smtps://user:s3cret-pw@mail.example.com", "smtps://mail.example.com:465"),
            (
                "smtps://user:s3cret-pw@mail.example.com:1465/helo.example",
                "smtps://mail.example.com:1465",
            ),
            ("smtp://[::1]:2525", "smtp://[::1]:2525"),
        ];
        for (url, want) in cases {
            let mailer = Mailer::smtp(url, "Souq <no-reply@localhost>").unwrap();
            assert_eq!(mailer.describe(), want);
            assert_eq!(format!("{mailer:?}"), format!("Mailer({want:?})"));
        }
    }

    #[tokio::test]
    async fn bad_configuration_is_config_error_without_password() {
        let from = "Souq <no-reply@localhost>";
        for url in [
            "http://user:s3cret-pw@mail.example.com",
            "smtp://user:s3cret-pw@mail.example.com:notaport",
            "smtp://user:s3cret-pw@mail.example.com?tls=sometimes",
            "smtp://user:s3cret-pw@",
            "not a url s3cret-pw",
        ] {
            let err = Mailer::smtp(url, from).unwrap_err();
            assert!(matches!(err, MailError::Config(_)), "{url}: {err}");
            assert!(!err.to_string().contains("s3cret-pw"), "{url}: {err}");
            assert!(!format!("{err:?}").contains("s3cret-pw"), "{url}: {err:?}");
        }
        for bad_from in ["", "no-reply", "Souq <no-reply@>", "a@b\r\nBcc: x@y"] {
            let err = Mailer::smtp("smtp://127.0.0.1:2525", bad_from).unwrap_err();
            assert!(matches!(err, MailError::Config(_)), "{bad_from:?}: {err}");
        }
    }

    #[test]
    fn smtp_outside_a_runtime_is_an_error_not_a_panic() {
        let err = Mailer::smtp("smtp://127.0.0.1:2525", "no-reply@localhost").unwrap_err();
        assert!(matches!(err, MailError::Config(_)), "{err}");
    }

    #[tokio::test]
    async fn bad_recipient_is_config_error() {
        let dir = std::env::temp_dir().join(format!("souq-mail-badto-{}", std::process::id()));
        let mailer = Mailer::file(&dir, "Souq <no-reply@localhost>").unwrap();
        assert_eq!(mailer.describe(), format!("files in {}", dir.display()));
        let mail = Rendered { subject: "s".into(), text: "t".into(), html: "<p>h</p>".into() };
        for to in ["", "nobody", "a@b\nBcc: evil@example.com"] {
            let err = mailer.send(to, &mail).await.unwrap_err();
            assert!(matches!(err, MailError::Config(_)), "{to:?}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
