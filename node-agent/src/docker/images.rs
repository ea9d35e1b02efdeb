//! Runtime images: the `deploy/runtimes` sources are embedded in the binary, so any
//! `souq` can write them out and run their `build.sh`, which tags each image by a hash of
//! its inputs. The agent asks the script for the tags rather than computing them twice.
use std::{collections::BTreeMap, path::Path, process::Stdio};

use bollard::Docker;
use souq_proto::Runtime;
use tokio::process::Command;
use tracing::info;

use crate::error::{Error, Result};

/// The files of `deploy/runtimes`, by path relative to it.
const SOURCES: [(&str, &str); 12] = [
    ("build.sh", include_str!("../../../deploy/runtimes/build.sh")),
    ("python/Dockerfile", include_str!("../../../deploy/runtimes/python/Dockerfile")),
    ("python/shim.py", include_str!("../../../deploy/runtimes/python/shim.py")),
    ("python/serve.py", include_str!("../../../deploy/runtimes/python/serve.py")),
    ("node/Dockerfile", include_str!("../../../deploy/runtimes/node/Dockerfile")),
    ("node/shim.js", include_str!("../../../deploy/runtimes/node/shim.js")),
    ("node/session.js", include_str!("../../../deploy/runtimes/node/session.js")),
    ("node/serve.js", include_str!("../../../deploy/runtimes/node/serve.js")),
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

/// Asks the build script in `dir` which tags the current sources build.
pub async fn tags(dir: &Path) -> Result<Images> {
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
        Err(e) => Err(e.into()),
    }
}

/// Builds every missing image with the script in `dir`, its progress shown on this
/// process's stdout and stderr.
pub async fn build_missing(docker: &Docker, dir: &Path) -> Result<Images> {
    let images = tags(dir).await?;
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
