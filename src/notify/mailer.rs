//! Delivery: SMTP through lettre (STARTTLS, implicit TLS, or plain on a trusted relay, with
//! authentication), or a folder with one `.eml` file per message, the embedded default.

use std::path::PathBuf;

use async_trait::async_trait;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::config::{Config, SmtpConfig, SmtpSecurity};

use super::outbox::Message;

/// How long one message may take to go out, connection, TLS, login and every reply
/// included. lettre's own timeout covers reads and writes of the socket but not every step,
/// and a server that accepts the connection and never answers must not hold anything up.
pub const SEND_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);
/// lettre's per-step timeout, inside the deadline.
const STEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Why a message did not go out, or mail cannot be set up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MailError {
    /// The server cannot be reached, or did not answer in time: the other messages waiting
    /// would fare no better now.
    #[error("{0}")]
    Unreachable(String),
    /// The server answered and refused this message.
    #[error("{0}")]
    Refused(String),
    /// This message cannot be made (an address that is not one, no recipients).
    #[error("{0}")]
    Malformed(String),
    /// The mail settings cannot be used (a password or CA file that cannot be read, a host
    /// lettre refuses).
    #[error("{0}")]
    Setup(String),
}

#[async_trait]
pub trait Mailer: Send + Sync {
    /// Deliver one message; `Err` leaves it in the outbox for another try.
    async fn send(&self, message: &Message) -> Result<(), MailError>;
    /// Where mail goes, for messages to people.
    fn describe(&self) -> String;
    /// Whether mail could go out now, without sending any: the SMTP server accepts a
    /// connection (TLS and login included), or the mail folder can be written.
    async fn probe(&self) -> Result<(), MailError>;
}

/// Build the RFC 5322 message: plain text and HTML alternatives, and attachments.
pub fn build(from: &str, message: &Message) -> Result<lettre::Message, MailError> {
    let bad = MailError::Malformed;
    let from: Mailbox = from
        .parse()
        .map_err(|e| bad(format!("from address {from:?}: {e}")))?;
    let mut builder = lettre::Message::builder()
        .from(from)
        .subject(message.subject.clone());
    if message.to.is_empty() {
        return Err(bad(
            "no recipients: add addresses to [alerts] to in vouch.toml".into(),
        ));
    }
    for to in &message.to {
        builder = builder.to(to
            .parse()
            .map_err(|e| bad(format!("recipient {to:?}: {e}")))?);
    }
    let alternative = MultiPart::alternative()
        .singlepart(SinglePart::plain(message.text.clone()))
        .singlepart(SinglePart::html(message.html.clone()));
    let body = if message.attachments.is_empty() {
        alternative
    } else {
        let mut mixed = MultiPart::mixed().multipart(alternative);
        for (name, content_type, bytes) in &message.attachments {
            let ct = ContentType::parse(content_type).unwrap_or(ContentType::TEXT_PLAIN);
            mixed = mixed.singlepart(Attachment::new(name.clone()).body(bytes.clone(), ct));
        }
        mixed
    };
    builder.multipart(body).map_err(|e| bad(e.to_string()))
}

/// Writes each message as a `.eml` file into a folder.
pub struct FileMailer {
    pub folder: PathBuf,
    pub from: String,
}

#[async_trait]
impl Mailer for FileMailer {
    async fn send(&self, message: &Message) -> Result<(), MailError> {
        let email = build(&self.from, message)?;
        let folder_error = |e: std::io::Error| {
            MailError::Unreachable(format!("mail folder {}: {e}", self.folder.display()))
        };
        crate::sys::create_private_dir(&self.folder).map_err(folder_error)?;
        let stamp = crate::clock::Clock::now(&crate::clock::SystemClock).as_nanosecond();
        let name = format!(
            "{stamp}-{}.eml",
            hex::encode(crate::repo::crypto::random_array::<4>())
        );
        let tmp = self.folder.join(format!(".{name}.tmp"));
        // Alerts name the school's systems and evidence emails carry its record: owner only.
        crate::sys::write_private(&tmp, &email.formatted()).map_err(folder_error)?;
        std::fs::rename(&tmp, self.folder.join(&name)).map_err(folder_error)?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("the mail folder {}", self.folder.display())
    }

    async fn probe(&self) -> Result<(), MailError> {
        let fail = |e: std::io::Error| {
            MailError::Unreachable(format!("mail folder {}: {e}", self.folder.display()))
        };
        crate::sys::create_private_dir(&self.folder).map_err(fail)?;
        let probe = self.folder.join(".vouch-doctor-probe");
        std::fs::write(&probe, b"vouch doctor").map_err(fail)?;
        std::fs::remove_file(&probe).map_err(fail)
    }
}

/// Sends through an SMTP server.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: String,
    server: String,
}

impl SmtpMailer {
    /// A reply that refuses this message (5xx) is about the message; anything else (no
    /// connection, TLS, a 4xx "try later") is about the server.
    fn refused_or_unreachable(&self, e: &lettre::transport::smtp::Error) -> MailError {
        let text = format!("SMTP server {}: {e}", self.server);
        if e.is_permanent() {
            MailError::Refused(text)
        } else {
            MailError::Unreachable(text)
        }
    }

    pub fn new(c: &SmtpConfig) -> Result<Self, MailError> {
        let setup = MailError::Setup;
        let mut b = match c.security {
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&c.host)
                .map_err(|e| setup(e.to_string()))?,
            SmtpSecurity::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.host)
                .map_err(|e| setup(e.to_string()))?,
            SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host),
        }
        .port(c.port)
        .timeout(Some(STEP_TIMEOUT));
        if let (Some(ca), true) = (&c.ca_file, c.security != SmtpSecurity::None) {
            let pem = std::fs::read(ca)
                .map_err(|e| setup(format!("SMTP ca_file {}: {e}", ca.display())))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| setup(format!("SMTP ca_file {}: {e}", ca.display())))?;
            let params = TlsParameters::builder(c.host.clone())
                .add_root_certificate(cert)
                .build_rustls()
                .map_err(|e| setup(e.to_string()))?;
            b = b.tls(match c.security {
                SmtpSecurity::Tls => Tls::Wrapper(params),
                _ => Tls::Required(params),
            });
        }
        if let (Some(user), Some(file)) = (&c.username, &c.password_file) {
            let password = std::fs::read_to_string(file)
                .map_err(|e| setup(format!("SMTP password file {}: {e}", file.display())))?;
            b = b.credentials(Credentials::new(
                user.clone(),
                password.lines().next().unwrap_or_default().to_string(),
            ));
        }
        Ok(Self {
            transport: b.build(),
            from: c.from.clone(),
            server: format!("{}:{}", c.host, c.port),
        })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, message: &Message) -> Result<(), MailError> {
        let email = build(&self.from, message)?;
        match tokio::time::timeout(SEND_DEADLINE, self.transport.send(email)).await {
            Err(_) => Err(MailError::Unreachable(format!(
                "SMTP server {}: no answer within {} s",
                self.server,
                SEND_DEADLINE.as_secs()
            ))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.refused_or_unreachable(&e)),
        }
    }

    fn describe(&self) -> String {
        format!("the SMTP server {}", self.server)
    }

    async fn probe(&self) -> Result<(), MailError> {
        match tokio::time::timeout(SEND_DEADLINE, self.transport.test_connection()).await {
            Err(_) => Err(MailError::Unreachable(format!(
                "SMTP server {}: no answer within {} s",
                self.server,
                SEND_DEADLINE.as_secs()
            ))),
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(MailError::Unreachable(format!(
                "SMTP server {}: connected, but it did not answer NOOP",
                self.server
            ))),
            Ok(Err(e)) => Err(self.refused_or_unreachable(&e)),
        }
    }
}

/// SMTP when vouch.toml has [smtp], else the mail folder.
pub fn mailer_for(config: &Config) -> Result<Box<dyn Mailer>, MailError> {
    Ok(match &config.smtp {
        Some(s) => Box::new(SmtpMailer::new(s)?),
        None => Box::new(FileMailer {
            folder: config.mail_folder.clone(),
            from: config.from.clone(),
        }),
    })
}
