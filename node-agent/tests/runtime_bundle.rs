//! The runtime images bundle of Souq's image on the real Docker Engine: a node that lacks
//! the images gets them loaded from the bundle's `docker save` archive, with no build.
//! Uses a tiny one-file image under three throwaway tags, so it runs by default.
// A test's helpers may panic: that fails the test, which is what they are for.
#![allow(clippy::unwrap_used)]
use std::{path::Path, process::Command};

use souq_node_agent::docker::{connect, images};

fn docker(args: &[&str]) {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Three tags of one tiny image, saved to `dir/images.tar`, with `dir/tags` naming them;
/// the tags are then removed from the Engine.
fn make_bundle(dir: &Path, id: &str) -> Vec<String> {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::write(rootfs.join("hello"), id).unwrap();
    let tar = dir.join("rootfs.tar");
    assert!(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".").status().unwrap().success());
    let tags: Vec<String> = ["python", "node", "go"].iter().map(|rt| format!("souq-test/bundle-{rt}:{id}")).collect();
    docker(&["import", tar.to_str().unwrap(), &tags[0]]);
    docker(&["tag", &tags[0], &tags[1]]);
    docker(&["tag", &tags[0], &tags[2]]);
    let archive = dir.join("images.tar");
    let mut save = vec!["save", "-o", archive.to_str().unwrap()];
    save.extend(tags.iter().map(String::as_str));
    docker(&save);
    let lines: String = ["python", "node", "go"].iter().zip(&tags).map(|(rt, t)| format!("{rt}={t}\n")).collect();
    std::fs::write(dir.join("tags"), lines).unwrap();
    remove(&tags);
    tags
}

fn remove(tags: &[String]) {
    let _ = Command::new("docker").arg("rmi").args(tags).output();
}

#[tokio::test]
async fn missing_images_are_loaded_from_the_bundle() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let dir = std::env::temp_dir().join(format!("souq-bundle-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let tags = make_bundle(&dir, &id);
    let d = connect(None).unwrap();
    let bundle = images::Bundle::read(&dir).unwrap().expect("the bundle is read");
    assert_eq!(bundle.images.values().cloned().collect::<std::collections::BTreeSet<_>>(), tags.iter().cloned().collect());
    for t in &tags {
        assert!(!images::exists(&d, t).await.unwrap(), "{t} removed before the load");
    }
    let loaded = bundle.load_missing(&d).await;
    let present: Vec<bool> = futures_present(&d, &tags).await;
    remove(&tags);
    let _ = std::fs::remove_dir_all(&dir);
    loaded.unwrap();
    assert_eq!(present, vec![true; 3], "every bundled image is present after the load");
}

async fn futures_present(d: &bollard::Docker, tags: &[String]) -> Vec<bool> {
    let mut out = Vec::new();
    for t in tags {
        out.push(images::exists(d, t).await.unwrap());
    }
    out
}

#[test]
fn a_missing_or_broken_bundle_is_told_apart() {
    let dir = std::env::temp_dir().join(format!("souq-bundle-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    assert!(images::Bundle::read(&dir).unwrap().is_none(), "no tags file: no bundle");
    std::fs::write(dir.join("tags"), "python=a:1\nnode=b:1\ngo=c:1\n").unwrap();
    let e = images::Bundle::read(&dir).unwrap_err().to_string();
    assert!(e.contains("images.tar"), "tags without the archive: {e}");
    std::fs::write(dir.join("images.tar"), "").unwrap();
    std::fs::write(dir.join("tags"), "python=a:1\n").unwrap();
    assert!(images::Bundle::read(&dir).is_err(), "a bundle naming one runtime is refused");
    std::fs::write(dir.join("tags"), "x".repeat(5000)).unwrap();
    assert!(images::Bundle::read(&dir).is_err(), "an oversized tags file is refused");
    let _ = std::fs::remove_dir_all(&dir);
}
