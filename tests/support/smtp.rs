//! A small SMTP server speaking real SMTP over loopback TCP (EHLO, AUTH PLAIN, MAIL, RCPT, DATA,
//! RSET, NOOP, QUIT), recording each accepted message. It can refuse a chosen recipient, answer
//! a scripted reply to the next DATA, and insist on credentials.

use base64::Engine;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

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

pub struct SmtpServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl SmtpServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, Arc::clone(&shared)));
            }
        });
        Self { addr, state }
    }

    /// `smtp://127.0.0.1:PORT`: plain SMTP, so the bridge must run with `tls = "none"`.
    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("smtp://{}", self.addr)).expect("URL")
    }

    /// RCPT TO `address` is answered with `reply`, e.g. `550 5.1.1 <x>: unknown user`.
    pub fn refuse_recipient(&self, address: &str, reply: &str) {
        let mut state = self.state.lock().unwrap();
        state.refused.insert(address.to_owned(), reply.to_owned());
    }

    /// The next DATA is answered with `reply` (e.g. `451 4.3.0 try later`) and not recorded.
    pub fn reply_to_next_data(&self, reply: &str) {
        self.state
            .lock()
            .unwrap()
            .data_replies
            .push_back(reply.to_owned());
    }

    /// Mail is only accepted after AUTH PLAIN with these credentials.
    pub fn require_login(&self, username: &str, password: &str) {
        self.state.lock().unwrap().credentials = Some((username.to_owned(), password.to_owned()));
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.state.lock().unwrap().mails.clone()
    }

    pub fn logins(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().logins.clone()
    }

    /// Waits (bounded) until at least `count` messages were accepted; returns them all.
    pub async fn wait_for_mails(&self, count: usize) -> Vec<Mail> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let mails = self.mails();
                if mails.len() >= count {
                    return mails;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("fewer than {count} mails arrived"))
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

async fn session(stream: TcpStream, state: Arc<Mutex<State>>) {
    // A client that hangs up mid-session just ends it.
    let _ = serve(stream, state).await;
}

async fn serve(stream: TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 smtp.test ESMTP ready\r\n").await?;
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
            "EHLO" => "250-smtp.test\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 AUTH PLAIN".to_owned(),
            "HELO" => "250 smtp.test".to_owned(),
            "AUTH" => {
                let (ok, login) = check_login(argument, &state);
                state.lock().unwrap().logins.extend(login);
                authenticated = ok;
                if ok {
                    "235 2.7.0 Authentication successful".to_owned()
                } else {
                    "535 5.7.8 Authentication credentials invalid".to_owned()
                }
            }
            "MAIL" => {
                let needs_login = state.lock().unwrap().credentials.is_some();
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
                    let refused = state.lock().unwrap().refused.get(&address).cloned();
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
                let mut state = state.lock().unwrap();
                let reply = match state.data_replies.pop_front() {
                    Some(reply) => reply,
                    None => {
                        state.mails.push(Mail {
                            mail_from: txn.mail_from.take().unwrap_or_default(),
                            rcpt_to: std::mem::take(&mut txn.rcpt_to),
                            data,
                        });
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
fn check_login(argument: &str, state: &Mutex<State>) -> (bool, Option<(String, String)>) {
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
    let expected = state.lock().unwrap().credentials.clone();
    (expected.as_ref() == Some(&login), Some(login))
}

/// The message up to the lone `.` line, with dot-stuffing undone.
async fn read_data(
    lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if lines.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" {
            return Ok(data);
        }
        let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
        data.extend_from_slice(unstuffed);
    }
}
