//! Every reply the inbound server sends, in one place, with its RFC code.
//!
//! Replies that need a value (the host name, a queue id) are functions.

/// One SMTP reply line (or lines), CRLF-terminated.
pub type Reply = &'static str;

pub const OK: Reply = "250 2.0.0 OK\r\n";
pub const SENDER_OK: Reply = "250 2.1.0 Sender OK\r\n";
pub const RECIPIENT_OK: Reply = "250 2.1.5 Recipient OK\r\n";
pub const RESET_OK: Reply = "250 2.0.0 Reset OK\r\n";
pub const CHUNK_OK: Reply = "250 2.0.0 Chunk accepted\r\n";
pub const START_DATA: Reply = "354 End data with <CR><LF>.<CR><LF>\r\n";
pub const AUTH_OK: Reply = "235 2.7.0 Authentication succeeded\r\n";
pub const AUTH_USERNAME: Reply = "334 VXNlcm5hbWU6\r\n";
pub const AUTH_PASSWORD: Reply = "334 UGFzc3dvcmQ6\r\n";
pub const AUTH_CONTINUE: Reply = "334 \r\n";
pub const READY_FOR_TLS: Reply = "220 2.0.0 Ready to start TLS\r\n";
pub const CANNOT_VRFY: Reply =
    "252 2.1.5 Cannot VRFY user, but will accept the message and attempt delivery\r\n";
pub const HELP: Reply =
    "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP\r\n";

pub const TIMEOUT: Reply = "421 4.4.2 Timeout waiting for a command; closing connection\r\n";
pub const TOO_MANY_CONNECTIONS: Reply = "421 4.7.0 Too many connections; try again later\r\n";
pub const SHUTTING_DOWN: Reply = "421 4.3.0 Relay shutting down; try again later\r\n";
pub const TOO_MANY_RECIPIENTS: Reply = "452 4.5.3 Too many recipients\r\n";
pub const STORE_FAILED: Reply =
    "452 4.3.1 Insufficient system storage; message not accepted, try again later\r\n";

pub const LINE_TOO_LONG: Reply = "500 5.5.2 Line too long\r\n";
pub const UNKNOWN_COMMAND: Reply = "500 5.5.1 Command unrecognized\r\n";
pub const NOT_IMPLEMENTED: Reply = "502 5.5.1 Command not implemented\r\n";
pub const SYNTAX_ERROR: Reply = "501 5.5.4 Syntax error in parameters\r\n";
pub const BAD_SENDER: Reply = "501 5.1.7 Bad sender address syntax\r\n";
pub const BAD_RECIPIENT: Reply = "501 5.1.3 Bad recipient address syntax\r\n";
pub const AUTH_CANCELLED: Reply = "501 5.7.0 Authentication cancelled\r\n";
pub const AUTH_UNDECODABLE: Reply =
    "501 5.5.2 Cannot decode the AUTH response (base64 expected)\r\n";
pub const HELO_FIRST: Reply = "503 5.5.1 Send EHLO or HELO first\r\n";
pub const MAIL_FIRST: Reply = "503 5.5.1 Send MAIL first\r\n";
pub const NESTED_MAIL: Reply = "503 5.5.1 Sender already given; send RSET first\r\n";
pub const RCPT_FIRST: Reply = "503 5.5.1 Send RCPT first\r\n";
pub const ALREADY_AUTHENTICATED: Reply = "503 5.5.1 Already authenticated\r\n";
pub const AUTH_NOT_OFFERED: Reply =
    "502 5.5.1 AUTH not offered; no authentication is needed here\r\n";
pub const STARTTLS_NOT_OFFERED: Reply = "502 5.5.1 STARTTLS not offered\r\n";
pub const ALREADY_TLS: Reply = "503 5.5.1 TLS already active\r\n";
pub const STARTTLS_FIRST: Reply = "530 5.7.0 Must issue a STARTTLS command first\r\n";
pub const AUTH_REQUIRED: Reply = "530 5.7.0 Authentication required\r\n";
pub const AUTH_INVALID: Reply = "535 5.7.8 Authentication credentials invalid\r\n";
pub const ENCRYPTION_REQUIRED: Reply =
    "538 5.7.11 Encryption required for requested authentication mechanism\r\n";
pub const AUTH_MECHANISM: Reply =
    "504 5.5.4 Unrecognized authentication mechanism; use PLAIN or LOGIN\r\n";
pub const MESSAGE_TOO_BIG: Reply = "552 5.3.4 Message size exceeds fixed maximum message size\r\n";
/// `who` (`client billing`, or an IP address) is over its `rate`.
pub fn rate_limited(who: &str, rate: relay_config::Rate) -> String {
    format!("450 4.7.1 Rate limit of {rate} reached for {who}; try again later\r\n")
}

/// The authenticated client may not send as `address` (its `senders`);
/// `what` is `Sender` (MAIL FROM) or `From:` (the header).
pub fn sender_not_allowed(what: &str, address: &str, client: &str) -> String {
    format!(
        "550 5.7.1 {what} <{}> is not among the senders allowed for client {client}\r\n",
        relay_message::scrub(address)
            .chars()
            .take(200)
            .collect::<String>()
    )
}

/// A non-ASCII address (or SMTPUTF8 asked for): Postmark's SMTP service does
/// not offer SMTPUTF8, so accepting it would only fail later, out of sight.
pub const NO_SMTPUTF8: Reply = "553 5.6.7 Non-ASCII addresses (SMTPUTF8) cannot be relayed to Postmark; use an ASCII address\r\n";

/// The greeting, sent on connect.
pub fn greeting(hostname: &str) -> String {
    format!("220 {hostname} ESMTP postmark-relay\r\n")
}

/// The refusal sent to a client outside `allowed_networks`.
pub fn not_allowed(ip: std::net::IpAddr) -> String {
    format!("554 5.7.1 Client {ip} is not in allowed_networks; closing connection\r\n")
}

/// The final reply once a message is durably queued.
pub fn queued(id: &str) -> String {
    format!("250 2.0.0 Ok: queued as {id}\r\n")
}

/// `221` on QUIT.
pub fn bye(hostname: &str) -> String {
    format!("221 2.0.0 {hostname} closing connection\r\n")
}

/// The EHLO reply: our extensions, one per line. SMTPUTF8 is not
/// advertised because Postmark does not offer it upstream; a client that
/// asks for it anyway, or sends a non-ASCII address, gets [`NO_SMTPUTF8`]. `starttls` and `auth`
/// say whether those are offered to this client now.
pub fn ehlo(hostname: &str, peer: &str, max_size: u64, starttls: bool, auth: bool) -> String {
    let mut lines = vec![format!("{hostname} greets {peer}")];
    lines.push(format!("SIZE {max_size}"));
    lines.extend(["8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES", "CHUNKING"].map(String::from));
    if starttls {
        lines.push("STARTTLS".into());
    }
    if auth {
        lines.push("AUTH PLAIN LOGIN".into());
    }
    let last = lines.len() - 1;
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| format!("250{}{l}\r\n", if i == last { ' ' } else { '-' }))
        .collect()
}

/// The HELO reply.
pub fn helo(hostname: &str) -> String {
    format!("250 {hostname}\r\n")
}
