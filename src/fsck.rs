//! `cri-imaged fsck`: checks offline, against the files on disk, every
//! invariant ARCHITECTURE.md promises, and with `repair` fixes what can be
//! fixed without losing an intact ready image.
//!
//! Checked: the record invariants (`metadata::check_consistency`); every
//! recorded blob's file present with its recorded size (and, with
//! `verify_content`, its digest); every committed snapshot's directory present,
//! and synced unless the kernel that wrote it is still running (an unsynced
//! mark of an earlier kernel boot: the machine went down before the sync, and
//! the files may be incomplete);
//! every ready image whole (its blobs and its snapshot chain); and no file
//! that no record names (orphans under `content/blobs`, `content/ingest`,
//! by the same rule gc uses: an ingest record names its partial file and the
//! blob file it is renamed to,
//! `snapshots`, and leftovers under `snapshots/extracting`).
//!
//! Repairs: derived indexes are rebuilt from the tables they mirror; a name
//! pointing nowhere and a lease resource list without its lease are removed;
//! a blob or snapshot record whose file is missing or damaged loses its record
//! and its file, and every ready image that needed it becomes `gc_pending`
//! (it was broken already: the kubelet pulls it again); orphans are deleted.
//! All record changes are one transaction, committed before any file is
//! deleted, so a crash during a repair leaves at worst more orphans.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::content_store::BlobPaths;
use crate::metadata::{
    BlobState, ConsistencyProblem, ImageState, MetadataError, MetadataStore, SnapshotState,
    check_consistency,
};
use crate::reference::{Digest, DigestHasher};

/// What to do besides checking.
#[derive(Clone, Debug, Default)]
pub struct FsckOptions {
    /// Re-hash every blob and compare with its digest (reads all content).
    pub verify_content: bool,
    /// Fix what can be fixed (see the module comment).
    pub repair: bool,
    /// The running kernel boot, which unsynced marks are checked against;
    /// `None` reads it from the kernel.
    pub kernel_boot_id: Option<String>,
}

/// One problem found, naming the object it concerns.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FsckProblem {
    #[error("{0}")]
    Record(ConsistencyProblem),
    #[error("blob {digest}: file {} is missing", path.display())]
    BlobFileMissing { digest: Digest, path: PathBuf },
    #[error("blob {digest}: file is {actual_bytes} bytes, the record says {expected_bytes}")]
    BlobFileWrongSize {
        digest: Digest,
        expected_bytes: u64,
        actual_bytes: u64,
    },
    #[error("blob {digest}: content hashes to {actual}")]
    BlobContentMismatch { digest: Digest, actual: Digest },
    #[error("snapshot {chain_id}: directory {} is missing", path.display())]
    SnapshotDirectoryMissing { chain_id: Digest, path: PathBuf },
    #[error(
        "snapshot {chain_id}: committed under kernel boot {kernel_boot_id} and not synced before \
         the machine restarted; its files may be incomplete"
    )]
    SnapshotNotSyncedBeforeRestart {
        chain_id: Digest,
        kernel_boot_id: String,
    },
    #[error("ready image {image_id} is broken: {cause}")]
    BrokenReadyImage { image_id: Digest, cause: String },
    #[error("orphan file {} (no record names it)", path.display())]
    OrphanFile { path: PathBuf },
    #[error("leftover of an interrupted extraction: {}", path.display())]
    LeftoverExtraction { path: PathBuf },
}

/// What a run found and, with `repair`, did.
#[derive(Debug, Default)]
pub struct FsckReport {
    pub problems: Vec<FsckProblem>,
    /// One line per repair made.
    pub repairs: Vec<String>,
    pub images_checked: u64,
    pub blobs_checked: u64,
    pub snapshots_checked: u64,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsckError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the store's files live.
#[derive(Clone, Debug)]
pub struct StoreLayout {
    pub blobs: BlobPaths,
    pub snapshots_directory: PathBuf,
}

impl StoreLayout {
    /// The layout under a daemon root (see `Config`).
    pub fn under_root(root: &Path) -> StoreLayout {
        StoreLayout {
            blobs: BlobPaths::new(root.join("content")),
            snapshots_directory: root.join("snapshots"),
        }
    }

    pub fn snapshot_directory(&self, chain_id: &Digest) -> PathBuf {
        self.snapshots_directory.join(format!(
            "{}-{}",
            chain_id.algorithm().name(),
            chain_id.hex()
        ))
    }

    fn extracting_directory(&self) -> PathBuf {
        self.snapshots_directory.join("extracting")
    }
}

/// Ready images whose blobs or snapshots are missing or the wrong size on
/// disk, with the first cause found: what startup reconciliation marks not
/// ready so it is pulled again rather than served broken.
pub fn broken_ready_images(
    metadata: &MetadataStore,
    layout: &StoreLayout,
) -> Result<Vec<(Digest, String)>, FsckError> {
    let read = metadata.read()?;
    // Unsynced marks are reconciliation's own first step, done by now.
    let damage = file_damage(layout, &read.blobs()?, &read.snapshots()?, &[], false)?;
    Ok(ready_images_broken_by(&read, &damage)?.0)
}

/// The recorded blobs and committed snapshots whose files are damaged.
struct FileDamage {
    blobs: BTreeMap<Digest, FsckProblem>,
    snapshots: BTreeMap<Digest, FsckProblem>,
}

fn file_damage(
    layout: &StoreLayout,
    blobs: &[crate::metadata::Blob],
    snapshots: &[crate::metadata::Snapshot],
    unsynced_before_restart: &[crate::metadata::UnsyncedSnapshot],
    verify_content: bool,
) -> Result<FileDamage, FsckError> {
    let mut damage = FileDamage {
        blobs: BTreeMap::new(),
        snapshots: BTreeMap::new(),
    };
    let mut directories = BlobDirectories::default();
    for blob in blobs.iter().filter(|blob| blob.state == BlobState::Present) {
        if let Some(problem) = check_blob_file(
            layout,
            &mut directories,
            &blob.digest,
            blob.size_bytes,
            verify_content,
        )? {
            damage.blobs.insert(blob.digest.clone(), problem);
        }
    }
    for snapshot in snapshots {
        let path = layout.snapshot_directory(&snapshot.chain_id);
        if snapshot.state == SnapshotState::Committed && !path.is_dir() {
            let problem = FsckProblem::SnapshotDirectoryMissing {
                chain_id: snapshot.chain_id.clone(),
                path,
            };
            damage.snapshots.insert(snapshot.chain_id.clone(), problem);
        }
    }
    for mark in unsynced_before_restart {
        damage
            .snapshots
            .entry(mark.chain_id.clone())
            .or_insert_with(|| FsckProblem::SnapshotNotSyncedBeforeRestart {
                chain_id: mark.chain_id.clone(),
                kernel_boot_id: mark.kernel_boot_id.clone(),
            });
    }
    Ok(damage)
}

/// The ready images `damage` breaks, each with its first cause, and how many
/// ready images were looked at.
fn ready_images_broken_by(
    read: &crate::metadata::ReadSnapshot,
    damage: &FileDamage,
) -> Result<(Vec<(Digest, String)>, u64), MetadataError> {
    let mut broken = Vec::new();
    let ready = read.list_images_in_state(ImageState::Ready)?;
    for image in &ready {
        if let Some(cause) = image_breakage(read, image, damage)? {
            broken.push((image.id().clone(), cause));
        }
    }
    Ok((broken, ready.len() as u64))
}

/// The first reason `image` cannot be served, if any.
fn image_breakage(
    read: &crate::metadata::ReadSnapshot,
    image: &crate::metadata::Image,
    damage: &FileDamage,
) -> Result<Option<String>, MetadataError> {
    let mut needed: Vec<Digest> = vec![
        image.target.digest.clone(),
        image.manifest.digest.clone(),
        image.config.digest.clone(),
    ];
    if let Some(manifest) = read.blob(&image.manifest.digest)? {
        needed.extend(manifest.children);
    }
    for digest in &needed {
        if let Some(problem) = damage.blobs.get(digest) {
            return Ok(Some(problem.to_string()));
        }
    }
    let mut next = image.top_chain_id.clone();
    while let Some(chain_id) = next {
        if let Some(problem) = damage.snapshots.get(&chain_id) {
            return Ok(Some(problem.to_string()));
        }
        next = read
            .snapshot(&chain_id)?
            .and_then(|snapshot| snapshot.parent);
    }
    Ok(None)
}

/// Runs every check, and the repairs when asked.
pub fn fsck(
    metadata: &MetadataStore,
    layout: &StoreLayout,
    options: FsckOptions,
) -> Result<FsckReport, FsckError> {
    let mut report = FsckReport::default();
    let read = metadata.read()?;

    let record_problems = check_consistency(&read)?;
    report
        .problems
        .extend(record_problems.iter().cloned().map(FsckProblem::Record));

    // Blobs: file present, right size, right digest; committed snapshots:
    // their directory present; ready images: whole on disk (their records
    // are check_consistency's).
    let blobs = read.blobs()?;
    let snapshots = read.snapshots()?;
    let running_kernel_boot = options
        .kernel_boot_id
        .clone()
        .unwrap_or_else(crate::snapshot_store::sync::running_kernel_boot_id);
    let unsynced_before_restart: Vec<_> = read
        .unsynced_snapshots()?
        .into_iter()
        .filter(|mark| mark.kernel_boot_id != running_kernel_boot)
        .collect();
    let damage = file_damage(
        layout,
        &blobs,
        &snapshots,
        &unsynced_before_restart,
        options.verify_content,
    )?;
    report.blobs_checked = blobs.len() as u64;
    report.snapshots_checked = snapshots.len() as u64;
    report.problems.extend(damage.blobs.values().cloned());
    report.problems.extend(damage.snapshots.values().cloned());
    let (broken, images_checked) = ready_images_broken_by(&read, &damage)?;
    report.images_checked = images_checked;
    let mut broken_images = Vec::with_capacity(broken.len());
    for (image_id, cause) in broken {
        report.problems.push(FsckProblem::BrokenReadyImage {
            image_id: image_id.clone(),
            cause,
        });
        broken_images.push(image_id);
    }
    for problem in &record_problems {
        if let ConsistencyProblem::ReadyImageMissingBlob { image_id, .. }
        | ConsistencyProblem::ReadyImageMissingSnapshot { image_id, .. } = problem
        {
            broken_images.push(image_id.clone());
        }
    }

    // Files no record names.
    let ingests = read.ingests()?;
    // An ingest record names its partial file and, as gc has it, the blob
    // file it becomes: a crash between the rename and the blob record leaves
    // that file, which the next pull of the blob replaces.
    let named_blobs: BTreeSet<PathBuf> = blobs
        .iter()
        .map(|blob| &blob.digest)
        .chain(ingests.iter().map(|ingest| &ingest.expected_digest))
        .map(|digest| layout.blobs.blob(digest))
        .collect();
    let named_partials: BTreeSet<PathBuf> = ingests
        .iter()
        .map(|ingest| layout.blobs.partial(&ingest.expected_digest))
        .collect();
    let named_snapshots: BTreeSet<PathBuf> = snapshots
        .iter()
        .map(|snapshot| layout.snapshot_directory(&snapshot.chain_id))
        .collect();
    let mut orphans = Vec::new();
    for algorithm_directory in list_directory(&layout.blobs.content_directory().join("blobs"))? {
        if !algorithm_directory.is_dir() {
            orphans.push(algorithm_directory);
            continue;
        }
        for path in list_directory(&algorithm_directory)? {
            if !named_blobs.contains(&path) {
                orphans.push(path);
            }
        }
    }
    for path in list_directory(&layout.blobs.ingest_directory())? {
        if !named_partials.contains(&path) {
            orphans.push(path);
        }
    }
    let extracting = layout.extracting_directory();
    let mut leftovers = Vec::new();
    for path in list_directory(&layout.snapshots_directory)? {
        if path == extracting {
            leftovers.extend(list_directory(&extracting)?);
        } else if !named_snapshots.contains(&path) {
            orphans.push(path);
        }
    }
    report.problems.extend(
        orphans
            .iter()
            .map(|path| FsckProblem::OrphanFile { path: path.clone() }),
    );
    report.problems.extend(
        leftovers
            .iter()
            .map(|path| FsckProblem::LeftoverExtraction { path: path.clone() }),
    );
    drop(read);

    if options.repair && !report.problems.is_empty() {
        repair(
            metadata,
            layout,
            &record_problems,
            &damage,
            &broken_images,
            &mut report,
        )?;
        for path in orphans.iter().chain(&leftovers) {
            remove_path(path)?;
            report.repairs.push(format!("removed {}", path.display()));
        }
    }
    Ok(report)
}

fn repair(
    metadata: &MetadataStore,
    layout: &StoreLayout,
    record_problems: &[ConsistencyProblem],
    damage: &FileDamage,
    broken_images: &[Digest],
    report: &mut FsckReport,
) -> Result<(), FsckError> {
    let mut repairs = Vec::new();
    metadata.write(|txn| {
        repairs.clear();
        for problem in record_problems {
            match problem {
                ConsistencyProblem::DanglingReference { name, .. }
                | ConsistencyProblem::InvalidName { name } => {
                    txn.remove_reference(name)?;
                    repairs.push(format!("removed name {name}"));
                }
                ConsistencyProblem::ResourcesOfMissingLease { lease_id } => {
                    txn.remove_lease(lease_id)?;
                    repairs.push(format!("removed the resource list of lease {lease_id}"));
                }
                ConsistencyProblem::UnsyncedMarkOfMissingSnapshot { chain_id } => {
                    txn.remove_unsynced_mark(chain_id)?;
                    repairs.push(format!("removed the unsynced mark of snapshot {chain_id}"));
                }
                _ => {}
            }
        }
        for image_id in broken_images {
            if txn.image(image_id)?.is_some() {
                txn.set_image_state(image_id, ImageState::GcPending)?;
                repairs.push(format!(
                    "marked broken image {image_id} gc_pending (pull it again)"
                ));
            }
        }
        for digest in damage.blobs.keys() {
            txn.remove_blob(digest)?;
            repairs.push(format!("removed the record of damaged blob {digest}"));
        }
        for chain_id in damage.snapshots.keys() {
            txn.remove_snapshot(chain_id)?;
            repairs.push(format!("removed the record of damaged snapshot {chain_id}"));
        }
        // Last: the images' states may have changed above.
        txn.rebuild_indexes()?;
        Ok(())
    })?;
    report.repairs.extend(repairs);
    report
        .repairs
        .push("rebuilt the name and state indexes".to_owned());
    // The records are gone and committed: now the damaged files may go.
    for digest in damage.blobs.keys() {
        let path = layout.blobs.blob(digest);
        remove_path(&path)?;
    }
    Ok(())
}

fn check_blob_file(
    layout: &StoreLayout,
    directories: &mut BlobDirectories,
    digest: &Digest,
    expected_bytes: u64,
    verify_content: bool,
) -> Result<Option<FsckProblem>, FsckError> {
    let path = layout.blobs.blob(digest);
    let actual_bytes = match directories.size_of(layout, digest) {
        Ok(Some(size)) => size,
        Ok(None) => {
            return Ok(Some(FsckProblem::BlobFileMissing {
                digest: digest.clone(),
                path,
            }));
        }
        Err(source) => return Err(FsckError::Io { path, source }),
    };
    if actual_bytes != expected_bytes {
        return Ok(Some(FsckProblem::BlobFileWrongSize {
            digest: digest.clone(),
            expected_bytes,
            actual_bytes,
        }));
    }
    if verify_content {
        let actual = hash_file(&path, digest)?;
        if actual != *digest {
            return Ok(Some(FsckProblem::BlobContentMismatch {
                digest: digest.clone(),
                actual,
            }));
        }
    }
    Ok(None)
}

/// The blob directories, opened once: a `stat` relative to an open directory
/// skips resolving `content/blobs/<algorithm>/` again for each of a store's
/// (possibly 100,000) blobs, which is most of what startup reconciliation's
/// on-disk check costs.
#[derive(Default)]
struct BlobDirectories {
    opened: std::collections::HashMap<&'static str, Option<std::os::fd::OwnedFd>>,
}

impl BlobDirectories {
    /// The size of `digest`'s blob file, `None` when there is none.
    fn size_of(&mut self, layout: &StoreLayout, digest: &Digest) -> std::io::Result<Option<u64>> {
        let algorithm = digest.algorithm().name();
        let directory = match self.opened.entry(algorithm) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let opened = match rustix::fs::open(
                    layout.blobs.blobs_directory(digest),
                    rustix::fs::OFlags::DIRECTORY
                        | rustix::fs::OFlags::RDONLY
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                ) {
                    Ok(fd) => Some(fd),
                    Err(rustix::io::Errno::NOENT) => None,
                    Err(errno) => return Err(errno.into()),
                };
                entry.insert(opened)
            }
        };
        let Some(directory) = directory else {
            return Ok(None);
        };
        match rustix::fs::statat(&*directory, digest.hex(), rustix::fs::AtFlags::empty()) {
            Ok(stat) => Ok(Some(stat.st_size as u64)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(errno) => Err(errno.into()),
        }
    }
}

fn hash_file(path: &Path, digest: &Digest) -> Result<Digest, FsckError> {
    let io = |source| FsckError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = DigestHasher::new(digest.algorithm());
    let mut buffer = vec![0; 1024 * 1024];
    loop {
        let read = file.read(&mut buffer).map_err(io)?;
        if read == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buffer[..read]);
    }
}

/// The entries of `directory`, sorted; none when it does not exist.
fn list_directory(directory: &Path) -> Result<Vec<PathBuf>, FsckError> {
    let entries = match std::fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(FsckError::Io {
                path: directory.to_path_buf(),
                source,
            });
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| FsckError::Io {
            path: directory.to_path_buf(),
            source,
        })?;
        paths.push(entry.path());
    }
    paths.sort();
    Ok(paths)
}

fn remove_path(path: &Path) -> Result<(), FsckError> {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    };
    removed.map_err(|source| FsckError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod unsynced_tests {
    use super::*;
    use crate::gc::tests::{Fixture, digest};

    #[test]
    fn a_snapshot_left_unsynced_by_an_earlier_kernel_boot_is_damage_that_repair_sends_back_to_the_registry()
     {
        let fixture = Fixture::new();
        let [s1, s2, s3] = [1, 2, 3].map(|number| digest(0x5b, number));
        let layer = |number| digest(0x1b, number);
        let stale = fixture.image(
            1,
            ImageState::Ready,
            &[layer(1), layer(2)],
            &[s1.clone(), s2.clone()],
        );
        let current = fixture.image(
            2,
            ImageState::Ready,
            &[layer(1), layer(3)],
            &[s1.clone(), s3.clone()],
        );
        fixture.mark_unsynced(&s2, "boot-before");
        fixture.mark_unsynced(&s3, "boot-now");
        let layout = StoreLayout::under_root(&fixture.root);
        let options = FsckOptions {
            kernel_boot_id: Some("boot-now".to_owned()),
            ..FsckOptions::default()
        };

        let report = fsck(&fixture.metadata, &layout, options.clone()).unwrap();
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
        assert!(
            report
                .problems
                .contains(&FsckProblem::SnapshotNotSyncedBeforeRestart {
                    chain_id: s2.clone(),
                    kernel_boot_id: "boot-before".to_owned(),
                })
        );
        assert!(report.problems.iter().any(|problem| matches!(
            problem,
            FsckProblem::BrokenReadyImage { image_id, .. } if *image_id == stale
        )));

        let repaired = fsck(
            &fixture.metadata,
            &layout,
            FsckOptions {
                repair: true,
                ..options
            },
        )
        .unwrap();
        assert!(!repaired.repairs.is_empty());
        let read = fixture.metadata.read().unwrap();
        assert_eq!(
            read.image(&stale).unwrap().unwrap().state,
            ImageState::GcPending
        );
        assert_eq!(
            read.image(&current).unwrap().unwrap().state,
            ImageState::Ready
        );
        assert_eq!(read.snapshot(&s2).unwrap(), None);
        assert!(read.snapshot(&s3).unwrap().is_some());
        assert_eq!(
            read.unsynced_snapshots()
                .unwrap()
                .iter()
                .map(|mark| &mark.chain_id)
                .collect::<Vec<_>>(),
            [&s3],
            "the running boot's mark stays for the daemon's sync"
        );
        fixture.assert_consistent();
    }
}
