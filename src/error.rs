//! The crate's error type: a message that says what went wrong, and a hint that
//! says what to do about it.
//!
//! Errors are built where the cause is known (`Error::new(..).hint(..)`), and
//! I/O errors get their context attached with [`IoContext::ctx`], so that the
//! user never sees a bare "No such file or directory".

use std::fmt;

/// What went wrong, and optionally what to do about it.
#[derive(Debug)]
pub struct Error {
    message: String,
    hint: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    kind: Kind,
}

/// What callers may act on, beyond the message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    #[default]
    Other,
    /// The thing asked for does not exist (a registry's 404).
    NotFound,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            hint: None,
            source: None,
            kind: Kind::Other,
        }
    }

    pub fn with_kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Attaches advice for the user ("pass --enable-gpu=false", ...).
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn hint_text(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Adds outer context: "reading layer 3 of full: <inner message>".
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        // An I/O error that carries one of our errors (from a verifying reader
        // deep inside a decompressor) is unwrapped so its message survives.
        if err.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            let inner = err.into_inner().expect("checked above");
            return *inner.downcast::<Error>().expect("checked above");
        }
        Error::new("I/O error").with_source(err)
    }
}

impl From<Error> for std::io::Error {
    fn from(err: Error) -> Self {
        std::io::Error::other(err)
    }
}

/// Attaches a description of what was being done to I/O and JSON errors.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::result::Result<T, std::io::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|err| {
            let converted = Error::from(err);
            match converted.source {
                // A plain I/O error: say what we were doing.
                Some(io) => Error::new(what()).with_source(io),
                // One of ours, carried through I/O: keep it, with context.
                None => converted.context(what()),
            }
        })
    }
}

impl<T> IoContext<T> for std::result::Result<T, serde_json::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|err| Error::new(what()).with_source(err))
    }
}
