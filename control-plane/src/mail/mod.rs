//! Account mail: the English and Arabic templates and the lettre transports (SMTP or .eml files).
pub mod templates;
pub mod transport;

pub use templates::{MailKind, MailVars, Rendered, render};
pub use transport::{MailError, Mailer, check_sender, check_smtp_url};
