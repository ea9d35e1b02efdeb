//! Fencing by epoch: the leader control plane stamps its commands to agents with its epoch, and an agent refuses a lower one than it has seen.
//!
//! Every leadership of the control plane has an epoch, one more than the one before it
//! (the lease row in the database). A control plane that lost its lease but does not know
//! it yet (paused, cut off) still stamps its old epoch; once any agent has seen a newer
//! one, it refuses the old leader's commands. The highest epoch can be kept in a small
//! file, so an agent that restarts does not forget it.
use std::{
    io,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tonic::{Request, Status, metadata::MetadataMap};

/// The metadata key that carries the epoch, in decimal.
pub const EPOCH_KEY: &str = "souq-epoch";

/// How a refusal's message starts, so the caller can tell it from other refusals.
const STALE: &str = "stale control-plane epoch";

/// The longest epoch file read (a decimal u64 and a newline fit many times over).
const MAX_FILE_BYTES: u64 = 64;

/// Stamps `req` with `epoch`.
pub fn set_epoch<T>(req: &mut Request<T>, epoch: u64) {
    // A decimal number is always valid ASCII metadata.
    req.metadata_mut().insert(EPOCH_KEY, epoch.into());
}

/// The epoch `metadata` carries; `None` when missing or not a decimal u64.
pub fn epoch_of(metadata: &MetadataMap) -> Option<u64> {
    metadata.get(EPOCH_KEY)?.to_str().ok()?.parse().ok()
}

/// Whether `status` is an agent's refusal of a stale epoch.
pub fn is_stale(status: &Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition && status.message().starts_with(STALE)
}

/// The highest epoch this agent has seen, kept in a file when one is given.
#[derive(Debug, Default)]
pub struct Fence {
    highest: AtomicU64,
    /// Where the highest epoch is kept across restarts; `None`: in memory only.
    file: Option<PathBuf>,
    /// Serialises the file's writes, so the last one written holds the highest epoch.
    writing: Mutex<()>,
}

impl Fence {
    /// A fence that remembers in memory only, starting from 0.
    pub fn new() -> Fence {
        Fence::default()
    }

    /// A fence kept in `file`: the highest epoch is read from it now (0 when it does not
    /// exist) and written to it on every increase. A file that cannot be read or holds no
    /// number is an error: starting from 0 would forget the fence.
    pub fn persisted(file: &Path) -> io::Result<Fence> {
        let highest = match std::fs::File::open(file) {
            Ok(f) => {
                let mut text = String::new();
                io::Read::read_to_string(&mut io::Read::take(f, MAX_FILE_BYTES), &mut text)?;
                text.trim()
                    .parse::<u64>()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("epoch file {}: {e}", file.display())))?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io::Error::new(e.kind(), format!("epoch file {}: {e}", file.display()))),
        };
        Ok(Fence { highest: AtomicU64::new(highest), file: Some(file.to_owned()), writing: Mutex::new(()) })
    }

    /// The highest epoch seen.
    pub fn highest(&self) -> u64 {
        self.highest.load(Ordering::SeqCst)
    }

    /// Admits a command stamped with `epoch` (missing counts as 0): refused with
    /// FAILED_PRECONDITION when lower than the highest seen; a higher one is remembered.
    pub fn admit(&self, epoch: Option<u64>) -> Result<(), Status> {
        let epoch = epoch.unwrap_or(0);
        let before = self.highest.fetch_max(epoch, Ordering::SeqCst);
        if epoch < before {
            return Err(Status::failed_precondition(format!(
                "{STALE}: the command carries epoch {epoch}, but this agent has seen epoch {before}"
            )));
        }
        if epoch > before {
            self.persist();
        }
        Ok(())
    }

    /// Writes the highest epoch to the file (a new file renamed over the old one, so a
    /// crash leaves one or the other whole). A failure is logged: the fence still holds in
    /// memory until the agent restarts.
    fn persist(&self) {
        let Some(file) = &self.file else { return };
        let Ok(_guard) = self.writing.lock() else { return };
        let value = self.highest();
        let mut tmp = file.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            io::Write::write_all(&mut f, format!("{value}\n").as_bytes())?;
            // On disk before it replaces the old value: a power cut keeps one or the other.
            f.sync_all()?;
            std::fs::rename(&tmp, file)
        })();
        if let Err(e) = written {
            tracing::warn!(file = %file.display(), epoch = value, error = %e, "could not persist the control-plane epoch");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lower_epochs_are_refused_equal_and_higher_admitted() {
        let fence = Fence::new();
        assert!(fence.admit(None).is_ok(), "missing is 0, and 0 is the start");
        assert!(fence.admit(Some(3)).is_ok());
        assert!(fence.admit(Some(3)).is_ok(), "equal");
        let refused = fence.admit(Some(2)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(refused.message().contains("epoch 2") && refused.message().contains("epoch 3"), "{}", refused.message());
        assert!(is_stale(&refused));
        assert!(fence.admit(None).is_err(), "missing counts as 0");
        assert!(fence.admit(Some(9)).is_ok(), "higher");
        assert_eq!(fence.highest(), 9);
    }

    #[test]
    fn the_epoch_travels_as_metadata() {
        let mut req = Request::new(());
        assert_eq!(epoch_of(req.metadata()), None);
        set_epoch(&mut req, 42);
        assert_eq!(epoch_of(req.metadata()), Some(42));
        req.metadata_mut().insert(EPOCH_KEY, "x".parse().unwrap());
        assert_eq!(epoch_of(req.metadata()), None);
    }

    #[test]
    fn the_highest_epoch_survives_a_reload() {
        let dir = std::env::temp_dir().join(format!("souq-fence-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("epoch");
        let _ = std::fs::remove_file(&file);
        let fence = Fence::persisted(&file).unwrap();
        assert_eq!(fence.highest(), 0, "no file yet");
        fence.admit(Some(7)).unwrap();
        fence.admit(Some(5)).unwrap_err();
        drop(fence);
        let again = Fence::persisted(&file).unwrap();
        assert_eq!(again.highest(), 7);
        assert!(again.admit(Some(6)).is_err(), "a restarted agent still refuses the old epoch");
        std::fs::write(&file, "not a number").unwrap();
        assert!(Fence::persisted(&file).is_err(), "a corrupt file is not taken for 0");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
