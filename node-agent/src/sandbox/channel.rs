//! The agent–shim channel of one sandbox: a Unix socket in a fresh directory that the
//! agent owns and mounts read-only into that sandbox. The shim connects to it and can
//! neither remove nor replace it (measured faster than the attached stdio; see
//! docs/PERFORMANCE.md). Sessions and instances both use it. The directories are 0711
//! and the socket 0600, owned by the sandbox's user: no other local user of the host can
//! list the channels or connect before the shim does.
use std::{
    os::unix::fs::{PermissionsExt, chown},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::net::{UnixListener, UnixStream};

use super::profile::SANDBOX_USER;
use crate::error::{Error, Result};

/// The channel directory's path inside the sandbox.
pub const CHANNEL_MOUNT: &str = "/run/souq";
/// The socket's name in the channel directory.
pub const SOCKET_NAME: &str = "shim.sock";
/// The socket's path inside the sandbox: `CHANNEL_MOUNT/SOCKET_NAME`.
pub const SANDBOX_SOCKET: &str = "/run/souq/shim.sock";
/// Longest root of the channel directories, in bytes: a Unix socket path is at most 107
/// bytes, and `/<16 hex>/shim.sock` takes 27 of them.
pub const MAX_CHANNEL_DIR: usize = 80;
/// Mode of the channel directories (the root and each sandbox's): others may pass
/// through, but not list or change them.
pub const DIR_MODE: u32 = 0o711;
/// Mode of each socket: only its owner, the sandbox's user (and root), may connect.
pub const SOCKET_MODE: u32 = 0o600;

/// The uid and gid of [`SANDBOX_USER`].
fn sandbox_ids() -> Result<(u32, u32)> {
    let bad = || Error::Internal(format!("sandbox user {SANDBOX_USER} is not uid:gid"));
    let (uid, gid) = SANDBOX_USER.split_once(':').ok_or_else(bad)?;
    Ok((uid.parse().map_err(|_| bad())?, gid.parse().map_err(|_| bad())?))
}

/// A channel directory with its listening socket; the directory is removed on drop.
#[derive(Debug)]
pub struct Channel {
    id: String,
    dir: PathBuf,
    listener: Option<UnixListener>,
}

impl Channel {
    /// Makes a new directory under `root`, named by 64 random bits (short, so that the
    /// socket path stays within the limit; see [`MAX_CHANNEL_DIR`]), listening on its socket.
    pub fn open(root: &Path) -> Result<Channel> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
        let dir = root.join(&id);
        let io = |e: std::io::Error| Error::Internal(format!("channel {}: {e}", dir.display()));
        let (uid, gid) = sandbox_ids()?;
        std::fs::create_dir_all(&dir).map_err(io)?;
        // From here on, drop removes the directory whatever fails below.
        let mut channel = Channel { id, dir: dir.clone(), listener: None };
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(DIR_MODE)).map_err(io)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(DIR_MODE)).map_err(io)?;
        let socket = dir.join(SOCKET_NAME);
        channel.listener = Some(UnixListener::bind(&socket).map_err(io)?);
        // Only the sandbox's user may connect (the agent runs as root, so it may chown);
        // the directory stays root's and read-only to it.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(io)?;
        chown(&socket, Some(uid), Some(gid)).map_err(io)?;
        Ok(channel)
    }

    /// The directory's name: 16 hex digits, unique on this node.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The directory on the host, to be bind-mounted at [`CHANNEL_MOUNT`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits up to `timeout` for the shim to connect, then stops listening: nothing else
    /// may connect later.
    pub async fn accept(&mut self, timeout: Duration) -> Result<UnixStream> {
        let listener = self.listener.take().ok_or_else(|| Error::Internal("the channel was already taken".into()))?;
        let (stream, _) = tokio::time::timeout(timeout, listener.accept())
            .await
            .map_err(|_| Error::Internal(format!("the shim did not connect within {} s", timeout.as_secs())))?
            .map_err(|e| Error::Internal(format!("channel {}: {e}", self.dir.display())))?;
        Ok(stream)
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[tokio::test]
    async fn a_channel_accepts_once_and_is_removed_on_drop() {
        assert_eq!(SANDBOX_SOCKET, format!("{CHANNEL_MOUNT}/{SOCKET_NAME}"));
        let root = std::env::temp_dir().join(format!("souq-chan-{}", std::process::id()));
        let mut ch = Channel::open(&root).unwrap();
        let dir = ch.dir().to_owned();
        let socket = dir.join(SOCKET_NAME);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&root), DIR_MODE);
        assert_eq!(mode(&dir), DIR_MODE);
        assert_eq!(mode(&socket), SOCKET_MODE);
        let meta = std::fs::metadata(&socket).unwrap();
        assert_eq!((meta.uid(), meta.gid()), sandbox_ids().unwrap());
        assert_eq!(sandbox_ids().unwrap(), (65534, 65534));
        let client = tokio::spawn(async move { UnixStream::connect(socket).await });
        ch.accept(Duration::from_secs(5)).await.unwrap();
        client.await.unwrap().unwrap();
        assert!(ch.accept(Duration::from_millis(10)).await.is_err(), "one connection only");
        assert!(UnixStream::connect(dir.join(SOCKET_NAME)).await.is_err(), "nobody listens any more");
        drop(ch);
        assert!(!dir.exists());
        let _ = std::fs::remove_dir_all(root);
    }
}
