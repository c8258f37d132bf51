//! A local mailbox: a small SMTP server speaking real SMTP over loopback TCP (EHLO, AUTH PLAIN,
//! MAIL, RCPT, DATA, RSET, NOOP, QUIT) that keeps each message it accepts. The demo points the
//! bridge's e-mail channel at it and prints what arrives; the e-mail tests script it to refuse a
//! recipient, answer the next DATA with an error, or insist on credentials.
//!
//! It listens on 127.0.0.1 only and keeps every message in memory: a stand-in for a relay on the
//! same machine, not a mail server.

use base64::Engine;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};
use url::Url;

/// How many accepted messages a slow [`Mailbox::arrivals`] reader may fall behind by.
const ARRIVALS_BUFFER: usize = 256;
/// The pause after a failed accept, so a lasting failure does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One accepted message: its envelope and the raw DATA (dot-unstuffed, CRLF line ends).
#[derive(Debug, Clone)]
pub struct Mail {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub data: Vec<u8>,
}

#[derive(Default)]
struct State {
    mails: Vec<Mail>,
    /// Recipient address → the full reply line to RCPT TO.
    refused: HashMap<String, String>,
    /// Replies to the next DATA transactions, instead of accepting them.
    data_replies: VecDeque<String>,
    credentials: Option<(String, String)>,
    /// Every AUTH PLAIN identity and password presented.
    logins: Vec<(String, String)>,
}

/// What the sessions share: the state, and where each accepted message is announced.
struct Shared {
    state: Mutex<State>,
    arrivals: broadcast::Sender<Mail>,
}

impl Shared {
    // A session that panicked cannot leave the state half-changed in a way that matters here.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running server; it stops accepting connections when dropped.
pub struct Mailbox {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: DropGuard,
}

impl Mailbox {
    /// Listens on a free port of 127.0.0.1.
    pub async fn start() -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            arrivals: broadcast::channel(ARRIVALS_BUFFER).0,
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept(listener, Arc::clone(&shared), stop.clone()));
        Ok(Self {
            addr,
            shared,
            _stop: stop.drop_guard(),
        })
    }

    /// `smtp://127.0.0.1:PORT`: plain SMTP, so the bridge must run with `tls = "none"`.
    pub fn url(&self) -> Url {
        Url::parse(&format!("smtp://{}", self.addr)).expect("a socket address makes a valid URL")
    }

    /// RCPT TO `address` is answered with `reply`, e.g. `550 5.1.1 <x>: unknown user`.
    pub fn refuse_recipient(&self, address: &str, reply: &str) {
        self.shared
            .state()
            .refused
            .insert(address.to_owned(), reply.to_owned());
    }

    /// The next DATA is answered with `reply` (e.g. `451 4.3.0 try later`) and not kept.
    pub fn reply_to_next_data(&self, reply: &str) {
        self.shared.state().data_replies.push_back(reply.to_owned());
    }

    /// Mail is only accepted after AUTH PLAIN with these credentials.
    pub fn require_login(&self, username: &str, password: &str) {
        self.shared.state().credentials = Some((username.to_owned(), password.to_owned()));
    }

    /// Every message accepted so far, oldest first.
    pub fn mails(&self) -> Vec<Mail> {
        self.shared.state().mails.clone()
    }

    /// Every AUTH PLAIN identity and password presented so far.
    pub fn logins(&self) -> Vec<(String, String)> {
        self.shared.state().logins.clone()
    }

    /// Each message accepted from now on, as it is accepted.
    pub fn arrivals(&self) -> broadcast::Receiver<Mail> {
        self.shared.arrivals.subscribe()
    }

    /// Waits until at least `count` messages were accepted and returns them all. Unbounded:
    /// callers put their own time limit on it.
    pub async fn wait_for_mails(&self, count: usize) -> Vec<Mail> {
        // Subscribed before looking, so a message accepted in between still wakes us.
        let mut arrivals = self.arrivals();
        loop {
            let mails = self.mails();
            if mails.len() >= count {
                return mails;
            }
            // A new message or a lagged reader: either way, look again. The channel cannot
            // close while `self` holds its sender.
            let _ = arrivals.recv().await;
        }
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(session(stream, peer, Arc::clone(&shared)));
            }
            Err(error) => {
                // Out of file descriptors, say: give the sessions a moment to end.
                tracing::warn!(%error, "the mailbox cannot accept a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// What the server knows of the connection's current transaction.
#[derive(Default)]
struct Transaction {
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
}

/// `<address>` out of `MAIL FROM:<address> SIZE=...`.
fn path_of(argument: &str) -> Option<String> {
    let start = argument.find('<')?;
    let end = argument[start..].find('>')? + start;
    Some(argument[start + 1..end].to_owned())
}

#[tracing::instrument(skip_all, fields(%peer))]
async fn session(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    // A client that hangs up mid-session just ends it.
    if let Err(error) = serve(stream, &shared).await {
        tracing::debug!(%error, "an SMTP session ended early");
    }
}

async fn serve(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 localhost ESMTP ready\r\n").await?;
    let mut txn = Transaction::default();
    let mut authenticated = false;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end_matches(['\r', '\n']);
        let (verb, argument) = command.split_once(' ').unwrap_or((command, ""));
        let reply = match verb.to_ascii_uppercase().as_str() {
            "EHLO" => "250-localhost\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 AUTH PLAIN".to_owned(),
            "HELO" => "250 localhost".to_owned(),
            "AUTH" => {
                let (ok, login) = check_login(argument, shared);
                shared.state().logins.extend(login);
                authenticated = ok;
                if ok {
                    "235 2.7.0 Authentication successful".to_owned()
                } else {
                    "535 5.7.8 Authentication credentials invalid".to_owned()
                }
            }
            "MAIL" => {
                let needs_login = shared.state().credentials.is_some();
                if needs_login && !authenticated {
                    "530 5.7.0 Authentication required".to_owned()
                } else {
                    txn = Transaction {
                        mail_from: path_of(argument),
                        rcpt_to: Vec::new(),
                    };
                    "250 2.1.0 Ok".to_owned()
                }
            }
            "RCPT" => match path_of(argument) {
                None => "501 5.1.3 Bad recipient address syntax".to_owned(),
                Some(address) => {
                    let refused = shared.state().refused.get(&address).cloned();
                    match refused {
                        Some(reply) => reply,
                        None => {
                            txn.rcpt_to.push(address);
                            "250 2.1.5 Ok".to_owned()
                        }
                    }
                }
            },
            "DATA" if txn.mail_from.is_none() || txn.rcpt_to.is_empty() => {
                "503 5.5.1 Need MAIL and RCPT first".to_owned()
            }
            "DATA" => {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let data = read_data(&mut lines).await?;
                let scripted = shared.state().data_replies.pop_front();
                let reply = match scripted {
                    Some(reply) => reply,
                    None => {
                        let mail = Mail {
                            mail_from: txn.mail_from.take().unwrap_or_default(),
                            rcpt_to: std::mem::take(&mut txn.rcpt_to),
                            data,
                        };
                        shared.state().mails.push(mail.clone());
                        // Nobody listening is fine: the message is kept all the same.
                        let _ = shared.arrivals.send(mail);
                        "250 2.0.0 Ok: queued".to_owned()
                    }
                };
                txn = Transaction::default();
                reply
            }
            "RSET" => {
                txn = Transaction::default();
                "250 2.0.0 Ok".to_owned()
            }
            "NOOP" => "250 2.0.0 Ok".to_owned(),
            "QUIT" => {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => "502 5.5.2 Command not recognized".to_owned(),
        };
        write.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
}

/// `AUTH PLAIN <base64 of "\0user\0password">`: whether it matches, and what was presented.
fn check_login(argument: &str, shared: &Shared) -> (bool, Option<(String, String)>) {
    let Some(encoded) = argument.strip_prefix("PLAIN ") else {
        return (false, None);
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return (false, None);
    };
    let parts: Vec<&[u8]> = decoded.split(|b| *b == 0).collect();
    let [_, user, password] = parts.as_slice() else {
        return (false, None);
    };
    let login = (
        String::from_utf8_lossy(user).into_owned(),
        String::from_utf8_lossy(password).into_owned(),
    );
    let expected = shared.state().credentials.clone();
    (expected.as_ref() == Some(&login), Some(login))
}

/// The message up to the lone `.` line, with dot-stuffing undone.
async fn read_data(lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if lines.read_until(b'\n', &mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" {
            return Ok(data);
        }
        let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
        data.extend_from_slice(unstuffed);
    }
}
