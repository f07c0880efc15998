//! A daemon-side store without the daemon: metadata, content, and a lease to
//! pull under, for tests that drive `fetch_image` directly. Test modules add
//! their own pulling helpers in `impl Node` blocks.

use std::sync::Arc;

use cri_imaged::content_store::{ContentLimits, ContentStore};
use cri_imaged::metadata::{Lease, MetadataStore};

use crate::support::registry::BuiltImage;

/// The lease every pull of a [`Node`] runs under.
pub const LEASE: &str = "test-pull";

pub struct Node {
    pub _root: tempfile::TempDir,
    pub metadata: Arc<MetadataStore>,
    pub content: ContentStore,
}

impl Node {
    pub fn new() -> Node {
        let root = tempfile::tempdir().unwrap();
        let (metadata, _) = MetadataStore::open(&root.path().join("metadata.redb")).unwrap();
        let metadata = Arc::new(metadata);
        let lease = Lease {
            id: LEASE.to_owned(),
            created_unix_ms: 0,
            expires_unix_ms: u64::MAX,
            boot_id: "test".to_owned(),
            labels: Default::default(),
        };
        metadata.write(|txn| txn.put_lease(&lease)).unwrap();
        let content = ContentStore::open(
            root.path().join("content"),
            metadata.clone(),
            ContentLimits::default(),
        )
        .unwrap();
        Node {
            _root: root,
            metadata,
            content,
        }
    }

    /// Every blob of `image` is stored byte for byte and recorded.
    pub fn assert_holds(&self, image: &BuiltImage) {
        let read = self.metadata.read().unwrap();
        let stored = [
            (&image.manifest_digest, &image.manifest_bytes),
            (&image.config_digest, &image.config_bytes),
        ]
        .into_iter()
        .chain(
            image
                .layers
                .iter()
                .map(|layer| (&layer.digest, &layer.bytes)),
        );
        for (digest, bytes) in stored {
            let digest = cri_imaged::reference::Digest::parse(digest).unwrap();
            assert_eq!(
                &std::fs::read(self.content.paths().blob(&digest)).unwrap(),
                bytes,
                "blob {digest}"
            );
            assert!(read.blob(&digest).unwrap().is_some(), "record of {digest}");
        }
        assert!(read.ingests().unwrap().is_empty(), "no ingest is left");
    }
}
