//! Runtime images: the `deploy/runtimes` sources are embedded in the binary, so any
//! `souq` can write them out and run their `build.sh`, which tags each image by a hash of
//! its inputs. The agent asks the script for the tags rather than computing them twice.
//! Souq's own image also carries the built images as a bundle (`deploy/image/build.sh`):
//! then the tags come from the bundle and missing images are loaded from it, so a node
//! with only a Docker Engine (no registry, no internet, no build tools) gets them.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
};

use bollard::{Docker, query_parameters::ImportImageOptionsBuilder};
use souq_proto::Runtime;
use tokio::process::Command;
use tokio_stream::StreamExt;
use tracing::info;

use super::engine::Operation;
use crate::error::{Error, Result};

/// The files of `deploy/runtimes`, by path relative to it.
const SOURCES: [(&str, &str); 13] = [
    ("build.sh", include_str!("../../../deploy/runtimes/build.sh")),
    ("python/Dockerfile", include_str!("../../../deploy/runtimes/python/Dockerfile")),
    ("python/shim.py", include_str!("../../../deploy/runtimes/python/shim.py")),
    ("python/serve.py", include_str!("../../../deploy/runtimes/python/serve.py")),
    ("node/Dockerfile", include_str!("../../../deploy/runtimes/node/Dockerfile")),
    ("node/shim.js", include_str!("../../../deploy/runtimes/node/shim.js")),
    ("node/session.js", include_str!("../../../deploy/runtimes/node/session.js")),
    ("node/serve.js", include_str!("../../../deploy/runtimes/node/serve.js")),
    ("node/clock.js", include_str!("../../../deploy/runtimes/node/clock.js")),
    ("go/Dockerfile", include_str!("../../../deploy/runtimes/go/Dockerfile")),
    ("go/shim.go", include_str!("../../../deploy/runtimes/go/shim.go")),
    ("go/session.go", include_str!("../../../deploy/runtimes/go/session.go")),
    ("go/serve.go", include_str!("../../../deploy/runtimes/go/serve.go")),
];

/// The image of each runtime.
pub type Images = BTreeMap<Runtime, String>;

/// Writes the embedded runtime sources under `dir`, replacing what was there.
pub fn write_sources(dir: &Path) -> Result<()> {
    for (rel, text) in SOURCES {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        std::fs::write(&path, text).map_err(|e| io(&path, e))?;
    }
    Ok(())
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Internal(format!("{}: {e}", path.display()))
}

/// Parses `build.sh --print-tags` output: lines of `<runtime>=<image>`.
pub fn parse_tags(text: &str) -> Result<Images> {
    let mut images = Images::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (rt, image) = line
            .split_once('=')
            .ok_or_else(|| Error::Internal(format!("build.sh printed an unexpected line: {line:?}")))?;
        let rt: Runtime = rt.parse().map_err(|e| Error::Internal(format!("build.sh: {e}")))?;
        images.insert(rt, image.to_owned());
    }
    if images.len() != Runtime::ALL.len() {
        return Err(Error::Internal(format!("build.sh named {} runtimes, expected {}", images.len(), Runtime::ALL.len())));
    }
    Ok(images)
}

/// Where Souq's image keeps the runtime images bundle: `tags` (the `build.sh
/// --print-tags` lines) and `images.tar` (`docker save` of those images).
pub const BUNDLE_DIR: &str = "/usr/share/souq/runtimes";
/// Bounds the bundle's `tags` file, which is a few lines.
const MAX_TAGS_BYTES: u64 = 4096;

/// A runtime images bundle: the images and the `docker save` archive that holds them.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub images: Images,
    pub archive: PathBuf,
}

impl Bundle {
    /// Reads the bundle in `dir`; `None` when there is none (no `tags` file), an error
    /// when it is there but unreadable or incomplete.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let tags = dir.join("tags");
        let meta = match std::fs::metadata(&tags) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&tags, e)),
        };
        if meta.len() > MAX_TAGS_BYTES {
            return Err(Error::Internal(format!("{}: larger than {MAX_TAGS_BYTES} bytes", tags.display())));
        }
        let text = std::fs::read_to_string(&tags).map_err(|e| io(&tags, e))?;
        let archive = dir.join("images.tar");
        if !archive.is_file() {
            return Err(Error::Internal(format!("{} names images but {} is missing", tags.display(), archive.display())));
        }
        Ok(Some(Self { images: parse_tags(&text)?, archive }))
    }

    /// The bundle in Souq's image ([`BUNDLE_DIR`]), if this process runs in it.
    pub fn installed() -> Result<Option<Self>> {
        Self::read(Path::new(BUNDLE_DIR))
    }

    /// Loads the archive into the Engine (`docker load`) when any image is missing;
    /// afterwards every image must be present.
    pub async fn load_missing(&self, docker: &Docker) -> Result<()> {
        if present(docker, &self.images).await?.len() == self.images.len() {
            return Ok(());
        }
        info!(archive = %self.archive.display(), "loading the bundled runtime images into the Engine");
        let file = tokio::fs::File::open(&self.archive).await.map_err(|e| io(&self.archive, e))?;
        let body = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
        let mut progress = docker.import_image_stream(ImportImageOptionsBuilder::new().quiet(true).build(), body, None);
        while let Some(step) = progress.next().await {
            step.map_err(Operation::ImportImage.error())?;
        }
        let have = present(docker, &self.images).await?;
        let missing: Vec<_> = self.images.iter().filter(|(rt, _)| !have.contains(rt)).map(|(_, i)| i.as_str()).collect();
        if !missing.is_empty() {
            return Err(Error::Internal(format!(
                "{} loaded but these images are still missing: {missing:?}",
                self.archive.display()
            )));
        }
        Ok(())
    }
}

/// The tags of the runtime images: the installed bundle's when there is one, else what the
/// build script in `dir` computes for the current sources.
pub async fn tags(dir: &Path) -> Result<Images> {
    match Bundle::installed()? {
        Some(bundle) => Ok(bundle.images),
        None => script_tags(dir).await,
    }
}

/// Asks the build script in `dir` which tags the current sources build.
pub async fn script_tags(dir: &Path) -> Result<Images> {
    let out = Command::new("bash")
        .arg(dir.join("build.sh"))
        .arg("--print-tags")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::Internal(format!("run build.sh: {e}")))?;
    if !out.status.success() {
        return Err(Error::Internal(format!(
            "build.sh --print-tags failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse_tags(&String::from_utf8_lossy(&out.stdout))
}

/// The runtimes whose image is present in the Engine.
pub async fn present(docker: &Docker, images: &Images) -> Result<Vec<Runtime>> {
    let mut found = Vec::new();
    for (rt, image) in images {
        if exists(docker, image).await? {
            found.push(*rt);
        }
    }
    Ok(found)
}

/// Whether `image` is present in the Engine.
pub async fn exists(docker: &Docker, image: &str) -> Result<bool> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(false),
        Err(e) => Err(Operation::InspectImage.error()(e)),
    }
}

/// Makes every runtime image present: from the installed bundle when there is one (no
/// build tools needed), else built with the script in `dir`.
pub async fn build_missing(docker: &Docker, dir: &Path) -> Result<Images> {
    if let Some(bundle) = Bundle::installed()? {
        bundle.load_missing(docker).await?;
        return Ok(bundle.images);
    }
    build_with_script(docker, dir).await
}

/// Builds every missing image with the script in `dir`, its progress shown on this
/// process's stdout and stderr.
pub async fn build_with_script(docker: &Docker, dir: &Path) -> Result<Images> {
    let images = script_tags(dir).await?;
    if present(docker, &images).await?.len() == images.len() {
        return Ok(images);
    }
    info!(dir = %dir.display(), "building missing runtime images (the first time takes a few minutes)");
    let status = Command::new("bash")
        .arg(dir.join("build.sh"))
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .await
        .map_err(|e| Error::Internal(format!("run build.sh: {e}")))?;
    if !status.success() {
        return Err(Error::Internal(format!("build.sh failed with {status}")));
    }
    let missing: Vec<_> = {
        let have = present(docker, &images).await?;
        images.iter().filter(|(rt, _)| !have.contains(rt)).map(|(_, i)| i.clone()).collect()
    };
    if !missing.is_empty() {
        return Err(Error::Internal(format!("build.sh finished but these images are missing: {missing:?}")));
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_parse() {
        let t = parse_tags("python=souq/runtime-python:abc\nnode=souq/runtime-node:def\ngo=souq/runtime-go:123\n").unwrap();
        assert_eq!(t[&Runtime::Nodejs], "souq/runtime-node:def");
        assert!(parse_tags("python=x\n").is_err());
        assert!(parse_tags("ruby=x\nnode=y\ngo=z").is_err());
    }
}
