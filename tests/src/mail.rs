//! Reads the mail that the test SMTP sink (aiosmtpd on 127.0.0.1:2525, started by
//! scripts/ensure-services.sh) stored in its Maildir, MIME-decoded with mail-parser.
use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use mail_parser::{MessageParser, MimeHeaders, PartType};

/// Where the test SMTP sink stores mail.
pub const MAILDIR: &str = "/var/tmp/souq-mail";
/// The SMTP URL of the test sink.
pub const SMTP_URL: &str = "smtp://127.0.0.1:2525";

/// How often [`wait_for`] looks again.
const POLL: Duration = Duration::from_millis(50);

/// One received mail.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The first address of the To header (or else of the envelope), without display name.
    pub to: String,
    /// The decoded Subject header.
    pub subject: String,
    /// The decoded text/plain part; empty when there is none.
    pub text: String,
    /// The decoded text/html part; empty when there is none.
    pub html: String,
    /// The message as stored, with the sink's X-Peer, X-MailFrom and X-RcptTo headers.
    pub raw: Vec<u8>,
}

/// Every mail received so far for `to` (case-insensitive), oldest first (by file mtime then name).
///
/// A mail is for `to` when `to` is in its To or Cc header or among its envelope
/// recipients (X-RcptTo, which the sink adds), so Bcc'd mail is found too.
pub fn all_for(to: &str) -> Vec<Mail> {
    let want = to.trim();
    let mut files: Vec<(SystemTime, String, PathBuf)> = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(Path::new(MAILDIR).join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            if name.starts_with('.') || !meta.is_file() {
                continue;
            }
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            files.push((mtime, name, entry.path()));
        }
    }
    files.sort();
    files
        .into_iter()
        // A file may move from new/ to cur/ between listing and reading; skip it then.
        .filter_map(|(_, _, path)| std::fs::read(path).ok())
        .filter_map(|raw| decode(raw, want))
        .collect()
}

/// The mail in `raw` when it is for `want`.
fn decode(raw: Vec<u8>, want: &str) -> Option<Mail> {
    let msg = MessageParser::default().parse(&raw)?;
    let mut recipients: Vec<String> = Vec::new();
    for header in [msg.to(), msg.cc()].into_iter().flatten() {
        recipients.extend(header.iter().filter_map(|a| a.address()).map(str::to_owned));
    }
    if let Some(envelope) = msg.header_raw("X-RcptTo") {
        recipients
            .extend(envelope.split(',').map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()));
    }
    if !recipients.iter().any(|r| r.eq_ignore_ascii_case(want)) {
        return None;
    }
    let mut text = None;
    let mut html = None;
    for part in &msg.parts {
        match &part.body {
            PartType::Html(body) if html.is_none() => html = Some(body.to_string()),
            PartType::Text(body)
                if text.is_none()
                    && part
                        .content_type()
                        .and_then(|c| c.subtype())
                        .is_none_or(|s| s.eq_ignore_ascii_case("plain")) =>
            {
                text = Some(body.to_string());
            }
            _ => {}
        }
    }
    let mail = Mail {
        to: recipients.first().cloned().unwrap_or_default(),
        subject: msg.subject().unwrap_or_default().to_owned(),
        text: text.unwrap_or_default(),
        html: html.unwrap_or_default(),
        raw: Vec::new(),
    };
    drop(msg);
    Some(Mail { raw, ..mail })
}

/// Waits (polling every 50 ms, at most `patience`) until at least `n` mails for `to` arrived; returns them all, oldest first. Panics with a clear message on timeout.
pub async fn wait_for(to: &str, n: usize, patience: Duration) -> Vec<Mail> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let mails = all_for(to);
        if mails.len() >= n {
            return mails;
        }
        if tokio::time::Instant::now() >= deadline {
            let subjects: Vec<&str> = mails.iter().map(|m| m.subject.as_str()).collect();
            panic!(
                "waited {patience:?} for {n} mail(s) to {to} in {MAILDIR}, got {}: {subjects:?} \
                 (is the SMTP sink at {SMTP_URL} running? scripts/ensure-services.sh starts it)",
                mails.len()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The first http(s) link in a text that contains `needle`.
///
/// A link ends at whitespace, `<`, `>`, `"` or `'`; trailing `.,;:!?)]}` are not part of it.
/// Meant for plain text: links in HTML are escaped (`&amp;`).
pub fn link_containing(text: &str, needle: &str) -> Option<String> {
    let mut rest = text;
    while let Some(start) = rest.find("http") {
        let candidate = &rest[start..];
        if candidate.starts_with("http://") || candidate.starts_with("https://") {
            let end = candidate
                .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\''))
                .unwrap_or(candidate.len());
            let link =
                candidate[..end].trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']', '}']);
            if link.contains(needle) {
                return Some(link.to_owned());
            }
            rest = &candidate[end.max(1)..];
        } else {
            rest = &candidate[4..];
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_link_with_the_needle() {
        let text = "Hi,\n\nhttps://a.example/login\n\nOpen https://a.example/verify/tok_1?x=1&y=2.\nhttpx\n";
        assert_eq!(
            link_containing(text, "verify").as_deref(),
            Some("https://a.example/verify/tok_1?x=1&y=2")
        );
        assert_eq!(link_containing(text, "login").as_deref(), Some("https://a.example/login"));
        assert_eq!(link_containing(text, "").as_deref(), Some("https://a.example/login"));
        assert_eq!(link_containing(text, "nowhere"), None);
        assert_eq!(
            link_containing("(see http://x.test/a)", "x.test").as_deref(),
            Some("http://x.test/a")
        );
        assert_eq!(link_containing("https://", "").as_deref(), Some("https://"));
        assert_eq!(link_containing("", "a"), None);
    }
}
