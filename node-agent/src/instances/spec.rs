//! What an instance runs: the spec fixed for its whole life, and the checks that turn a
//! Deploy request into one. Pure; no I/O.
use std::{sync::Arc, time::Duration};

use souq_proto::{Kind, Runtime, WireError, agent::DeployRequest};

use crate::{
    docker::Images,
    error::{Error, Result},
    sandbox::profile::Limits,
};

/// Longest instance id.
pub const MAX_INSTANCE_ID: usize = 64;
/// Longest API id.
pub const MAX_API_ID: usize = 128;

/// What an instance runs: fixed for its whole life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    /// 1 to 64 characters of `[a-z0-9-]`.
    pub instance_id: String,
    /// The API it serves.
    pub api_id: String,
    /// The API version it serves.
    pub version: u32,
    /// The handler's runtime.
    pub runtime: Runtime,
    /// That runtime's image.
    pub image: String,
    /// The handler's source; never logged.
    pub code: Arc<str>,
    /// Wall timeout of one call.
    pub timeout: Duration,
}

/// Checks a Deploy request and makes it the instance's spec.
pub fn validate(req: DeployRequest, images: &Images, limits: &Limits) -> Result<InstanceSpec> {
    let invalid = |field: &str, message: String| Error::Wire(WireError::invalid(field, message));
    let id = &req.instance_id;
    if id.is_empty()
        || id.len() > MAX_INSTANCE_ID
        || !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(invalid("instance_id", format!("must be 1 to {MAX_INSTANCE_ID} characters of a-z, 0-9 and -")));
    }
    if req.api_id.is_empty() || req.api_id.len() > MAX_API_ID {
        return Err(invalid("api_id", format!("must be 1 to {MAX_API_ID} bytes")));
    }
    let runtime = Runtime::from_request(&req.runtime).map_err(Error::Wire)?;
    souq_proto::limits::check_code("code", &req.code).map_err(Error::Wire)?;
    let timeout_ms = match req.timeout_ms {
        0 => limits.max_timeout_ms,
        t if t > limits.max_timeout_ms => {
            return Err(invalid("timeout_ms", format!("must be at most {}", limits.max_timeout_ms)));
        }
        t => t,
    };
    let image = images
        .get(&runtime)
        .ok_or_else(|| Error::Wire(WireError::new(Kind::NoCapacity, format!("this node has no image for {runtime}"))))?;
    Ok(InstanceSpec {
        instance_id: req.instance_id,
        api_id: req.api_id,
        version: req.version,
        runtime,
        image: image.clone(),
        code: req.code.into(),
        timeout: Duration::from_millis(timeout_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_requests_are_validated() {
        let images = Images::from([(Runtime::Python, "py-img".to_owned())]);
        let limits = Limits::default();
        let req = |id: &str, runtime: &str, code: &str, timeout_ms: u64| DeployRequest {
            instance_id: id.into(),
            api_id: "api".into(),
            version: 3,
            runtime: runtime.into(),
            code: code.into(),
            timeout_ms,
        };
        let ok = validate(req("abc-123", "python", "x", 0), &images, &limits).unwrap();
        // No timeout asked: the operator's longest, which is the platform's default unless set.
        assert_eq!((ok.image.as_str(), ok.timeout, ok.version), ("py-img", Duration::from_millis(limits.max_timeout_ms), 3));
        assert_eq!(ok.timeout, souq_proto::limits::DEFAULT_TIMEOUT);
        assert_eq!(validate(req("a", "python", "x", 1500), &images, &limits).unwrap().timeout, Duration::from_millis(1500));
        let field = |r: Result<InstanceSpec>| match r {
            Err(Error::Wire(w)) => (w.kind, w.field),
            other => panic!("{other:?}"),
        };
        let invalid = |f: &str| (Kind::Validation, Some(f.to_owned()));
        for bad in ["", "ABC", "a_b", "a/b", &"a".repeat(65)] {
            assert_eq!(field(validate(req(bad, "python", "x", 0), &images, &limits)), invalid("instance_id"), "{bad:?}");
        }
        assert!(validate(req(&"a".repeat(64), "python", "x", 0), &images, &limits).is_ok());
        assert_eq!(field(validate(req("a", "ruby", "x", 0), &images, &limits)), invalid("runtime"));
        let too_long = "x".repeat(souq_proto::limits::MAX_CODE_BYTES + 1);
        assert_eq!(field(validate(req("a", "python", &too_long, 0), &images, &limits)), invalid("code"));
        assert_eq!(field(validate(req("a", "python", "", 0), &images, &limits)), invalid("code"));
        assert_eq!(field(validate(req("a", "python", " \n", 0), &images, &limits)), invalid("code"));
        assert_eq!(field(validate(req("a", "python", "x", limits.max_timeout_ms + 1), &images, &limits)), invalid("timeout_ms"));
        assert_eq!(field(validate(req("a", "go", "x", 0), &images, &limits)), (Kind::NoCapacity, None));
    }
}
