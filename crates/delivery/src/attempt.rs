//! What one delivery attempt of one message produced.

use relay_queue::Outcome;

/// The upstream's answers about one message.
#[derive(Debug, Default)]
pub struct Answers {
    /// One per recipient that got an answer, by envelope position.
    pub outcomes: Vec<(i64, Outcome)>,
    /// The final reply to the message's last body, for the log.
    pub reply: Option<String>,
}

/// One message's attempt over a session.
#[derive(Debug)]
pub enum Attempt {
    /// Every recipient got an answer.
    Answered(Answers),
    /// The connection broke before every recipient was answered: those
    /// answered keep their outcome, the others stay pending.
    Broken {
        answers: Answers,
        /// Why the connection broke.
        reason: String,
        /// The upstream said nothing at all about this message (a pooled
        /// connection that had gone stale), so it may go again at once.
        silent: bool,
    },
    /// Never sent (an earlier message broke the connection): give it back
    /// without counting an attempt.
    Untried,
}
