//! The runtimes a sandbox can run, with the names and aliases users may give them.
use std::{fmt, str::FromStr};

/// A language runtime with its own image and shim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Runtime {
    /// CPython 3.
    Python,
    /// Node.js; also accepted as `node`.
    Nodejs,
    /// Go; a snippet is a whole `package main` program compiled inside the sandbox.
    Go,
}

impl Runtime {
    /// Every runtime, in the order they are listed to users.
    pub const ALL: [Runtime; 3] = [Runtime::Python, Runtime::Nodejs, Runtime::Go];

    /// The canonical name used on the wire and in the REST contract.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Python => "python",
            Runtime::Nodejs => "nodejs",
            Runtime::Go => "go",
        }
    }

    /// The name of the runtime's directory and image under `deploy/runtimes/`.
    pub fn image_name(self) -> &'static str {
        match self {
            Runtime::Python => "python",
            Runtime::Nodejs => "node",
            Runtime::Go => "go",
        }
    }

    /// The names users may give, for error messages: `python, nodejs (or node), go`.
    pub fn listing() -> &'static str {
        "python, nodejs (or node), go"
    }
}

impl Runtime {
    /// Parses a runtime name from a request; an unknown one is a validation error naming
    /// the `runtime` field. Every hop parses with this.
    pub fn from_request(name: &str) -> Result<Runtime, crate::WireError> {
        name.parse().map_err(|e: UnknownRuntime| crate::WireError::invalid("runtime", e.to_string()))
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a runtime name Souq does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownRuntime(pub String);

impl fmt::Display for UnknownRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown runtime {:?}; expected one of: {}", self.0, Runtime::listing())
    }
}

impl std::error::Error for UnknownRuntime {}

impl FromStr for Runtime {
    type Err = UnknownRuntime;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "python" => Ok(Runtime::Python),
            "nodejs" | "node" => Ok(Runtime::Nodejs),
            "go" => Ok(Runtime::Go),
            other => Err(UnknownRuntime(other.chars().take(64).collect())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_parse() {
        assert_eq!("node".parse::<Runtime>(), Ok(Runtime::Nodejs));
        assert_eq!("nodejs".parse::<Runtime>(), Ok(Runtime::Nodejs));
        for rt in Runtime::ALL {
            assert_eq!(rt.as_str().parse::<Runtime>(), Ok(rt));
        }
        let err = "ruby".parse::<Runtime>().unwrap_err().to_string();
        assert!(err.contains("python, nodejs (or node), go"), "{err}");
        let wire = Runtime::from_request("ruby").unwrap_err();
        assert_eq!((wire.kind, wire.field.as_deref()), (crate::Kind::Validation, Some("runtime")));
    }
}
