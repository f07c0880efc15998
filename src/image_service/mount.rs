//! Read-only mounts of a ready image for inspection (`cri-imaged mount`), and
//! the mount a runtime would build from an image's snapshot chain.
//!
//! The daemon never mounts anything itself: the client does, in its own mount
//! namespace. What the daemon adds is a lease on the image and its snapshot
//! chain, labelled with the mount target, so that removing the image and
//! collecting garbage cannot delete directories that are mounted; the lease
//! ends when the client reports the unmount. Mount leases never expire and
//! survive restarts (the kernel mount does too).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::image_service::lookup::{self, ImageSelector};
use crate::image_service::{ImageService, ServiceError};
use crate::metadata::{ImageState, Lease, LeaseResource, MetadataError};
use crate::reference::Digest;

/// Label holding the absolute mount target of a mount lease.
pub const MOUNT_TARGET_LABEL: &str = "cri-imaged/mount-target";
/// Label saying what a lease is for; mount leases carry [`MOUNT_LEASE_KIND`].
pub const LEASE_KIND_LABEL: &str = "cri-imaged/kind";
pub const MOUNT_LEASE_KIND: &str = "mount";
/// Expiry of a lease that lasts until it is released.
pub const LEASE_NEVER_EXPIRES: u64 = u64::MAX;

/// How to mount an image's root filesystem read-only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageMount {
    /// Two or more layers: an overlay of the snapshot directories.
    Overlay {
        /// Lower dirs, top layer first (overlayfs' order).
        lower_dirs: Vec<PathBuf>,
        /// The `-o` option string for `mount -t overlay overlay`.
        options: String,
    },
    /// One layer: overlayfs needs two lower dirs without an upper dir, so a
    /// single layer is bind-mounted read-only, as containerd does.
    Bind { source: PathBuf },
}

impl ImageMount {
    /// Lower dirs, top first (a bind mount has one).
    pub fn lower_dirs(&self) -> Vec<PathBuf> {
        match self {
            ImageMount::Overlay { lower_dirs, .. } => lower_dirs.clone(),
            ImageMount::Bind { source } => vec![source.clone()],
        }
    }
}

/// A ready image's mount with what it is made of.
#[derive(Clone, Debug)]
pub struct ResolvedMount {
    pub image_id: Digest,
    /// Chain ids, top first (the order of the lower dirs).
    pub chain: Vec<Digest>,
    pub mount: ImageMount,
}

/// A mount lease taken for a client.
#[derive(Clone, Debug)]
pub struct PreparedMount {
    pub image_id: Digest,
    pub lease_id: String,
    pub mount: ImageMount,
}

impl ImageService {
    /// The read-only mount of the ready image `image` names: what a runtime
    /// consumes to build a container's root filesystem.
    pub fn image_mount(&self, image: &str) -> Result<ResolvedMount, ServiceError> {
        let selector = ImageSelector::parse(image)?;
        let snapshot = self.metadata.read()?;
        let found = lookup::find_image(&snapshot, &selector)?
            .filter(|found| found.state == ImageState::Ready)
            .ok_or_else(|| ServiceError::ImageNotFound {
                image: crate::reference::bounded_echo(image),
            })?;
        let Some(top) = found.top_chain_id.clone() else {
            return Err(ServiceError::NoLayers {
                image: found.id().clone(),
            });
        };
        let chain = self.snapshots.committed_chain(&top)?;
        let lower_dirs: Vec<PathBuf> = chain
            .iter()
            .map(|chain_id| self.snapshots.snapshot_directory(chain_id))
            .collect();
        let mount = if lower_dirs.len() == 1 {
            ImageMount::Bind {
                source: lower_dirs[0].clone(),
            }
        } else {
            let joined = lower_dirs
                .iter()
                .map(|directory| escape_overlay_path(directory))
                .collect::<Vec<_>>()
                .join(":");
            // Snapshots unpacked without privilege carry user.overlay.* whiteouts.
            let convention = if self.settings.unpack.privileged_whiteouts {
                ""
            } else {
                ",userxattr"
            };
            ImageMount::Overlay {
                lower_dirs,
                options: format!("lowerdir={joined}{convention}"),
            }
        };
        Ok(ResolvedMount {
            image_id: found.id().clone(),
            chain,
            mount,
        })
    }

    /// Takes a lease protecting the image and its snapshot chain while a client
    /// has it mounted at `target`, and says how to mount it.
    pub fn prepare_mount(&self, image: &str, target: &Path) -> Result<PreparedMount, ServiceError> {
        let target = absolute_target(target)?;
        let ResolvedMount {
            image_id,
            chain,
            mount,
        } = self.image_mount(image)?;
        let lease_id = format!("mount-{}", uuid::Uuid::new_v4().simple());
        self.metadata.write(|txn| {
            // The image may have been removed since the read above: protect
            // only what is still there, and fail rather than lease nothing.
            if txn
                .image(&image_id)?
                .is_none_or(|image| image.state != ImageState::Ready)
            {
                return Err(MetadataError::ImageNotFound {
                    id: image_id.clone(),
                });
            }
            let now = txn.now_unix_ms();
            txn.put_lease(&Lease {
                id: lease_id.clone(),
                created_unix_ms: now,
                expires_unix_ms: LEASE_NEVER_EXPIRES,
                boot_id: self.boot_id.clone(),
                labels: BTreeMap::from([
                    (LEASE_KIND_LABEL.to_owned(), MOUNT_LEASE_KIND.to_owned()),
                    (MOUNT_TARGET_LABEL.to_owned(), target.display().to_string()),
                ]),
            })?;
            txn.attach_to_lease(&lease_id, &LeaseResource::Image(image_id.clone()))?;
            for chain_id in &chain {
                txn.attach_to_lease(&lease_id, &LeaseResource::Snapshot(chain_id.clone()))?;
            }
            Ok(())
        })?;
        tracing::info!(image = %image_id, lease = %lease_id, target = %target.display(), "mount prepared");
        Ok(PreparedMount {
            image_id,
            lease_id,
            mount,
        })
    }

    /// Ends every mount lease for `target`; `false` when there was none.
    pub fn release_mount(&self, target: &Path) -> Result<bool, ServiceError> {
        let target = absolute_target(target)?.display().to_string();
        let released = self.metadata.write(|txn| {
            let mut released = 0;
            for lease in txn.leases()? {
                if is_mount_lease(&lease) && lease.labels.get(MOUNT_TARGET_LABEL) == Some(&target) {
                    txn.remove_lease(&lease.id)?;
                    released += 1;
                }
            }
            Ok(released)
        })?;
        if released > 0 {
            tracing::info!(target = %target, leases = released, "mount released");
            self.usage_changed();
        }
        Ok(released > 0)
    }
}

/// Whether `lease` is a mount lease (kept across restarts, never expiring).
pub fn is_mount_lease(lease: &Lease) -> bool {
    lease.labels.get(LEASE_KIND_LABEL).map(String::as_str) == Some(MOUNT_LEASE_KIND)
}

fn absolute_target(target: &Path) -> Result<PathBuf, ServiceError> {
    if !target.is_absolute() {
        return Err(ServiceError::InvalidMountTarget {
            target: target.display().to_string(),
            reason: "it must be an absolute path",
        });
    }
    // Lexically normalized so that `/mnt/x/` and `/mnt/x` name one target; the
    // client canonicalizes before asking.
    Ok(target.components().collect())
}

/// overlayfs splits lowerdir on `:` and treats `\` as an escape; snapshot
/// paths come from the root directory, which an operator may name freely.
fn escape_overlay_path(path: &Path) -> String {
    let text = path.display().to_string();
    text.replace('\\', "\\\\")
        .replace(':', "\\:")
        .replace(',', "\\,")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_paths_escape_separators() {
        assert_eq!(
            escape_overlay_path(Path::new("/a:b,c\\d")),
            "/a\\:b\\,c\\\\d"
        );
        assert_eq!(escape_overlay_path(Path::new("/var/lib/x")), "/var/lib/x");
    }

    #[test]
    fn relative_targets_are_refused() {
        assert!(matches!(
            absolute_target(Path::new("mnt/x")),
            Err(ServiceError::InvalidMountTarget { .. })
        ));
        assert_eq!(
            absolute_target(Path::new("/mnt/x/")).unwrap(),
            PathBuf::from("/mnt/x")
        );
    }
}
