//! Who may call which control-plane service, by the role in the caller's certificate
//! (mutual TLS, see `souq_proto::tls`): agents `Registry`, edges every other service
//! (`Nodes` too: operators reach it through the edge, with the admin token on top).
//! And a node's identity: the hash of its certificate's key, pinned at first registration.
use sha2::{Digest, Sha256};
use souq_proto::tls::{Role, peer_public_key};
use tonic::Request;

/// The services only edges call: the users' management calls and the data path's feeds.
pub(crate) const EDGES: &[Role] = &[Role::Edge];
/// `Registry`: only agents.
pub(crate) const AGENTS: &[Role] = &[Role::Agent];

/// The caller's identity: the SHA-256 of its certificate's public key, in hex; `None` in
/// plain text.
pub(crate) fn of<T>(req: &Request<T>) -> Option<String> {
    peer_public_key(req).map(|spki| hex::encode(Sha256::digest(spki)))
}
