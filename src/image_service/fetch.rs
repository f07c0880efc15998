//! The content half of a pull: resolve the reference, choose the platform's
//! manifest out of an index, and bring every blob (index, manifest, config,
//! layers) into the content store under the pull's lease, verified.
//!
//! Layers download concurrently, up to `layer_downloads_max` at once in this
//! pull and within the node-wide download slots given; a layer
//! whose stream fails transiently is resumed from the bytes already stored (a
//! `Range` request) up to `layer_resumes_max` times.
//!
//! Progress goes to the pull's [`PullProgress`]: `resolved` once the config is
//! known, a state change when a layer gets its download slot and when it is
//! stored, and a byte count per received chunk (an atomic add).

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::StreamExt;
use tracing::Instrument as _;

use crate::content_store::{
    BlobSource, BlobTap, ContentError, ContentStore, IngestError, IngestOutcome, IngestRequest,
    OpenedBlob,
};
use crate::image_service::pull_progress::PullProgress;
use crate::oci::Descriptor;
use crate::oci::manifest::{
    ImageConfig, ImageManifest, Manifest, ManifestError, ManifestLimits, decode_config,
    decode_manifest,
};
use crate::oci::platform::{Platform, PlatformMatcher};
use crate::reference::{Digest, ImageReference};
use crate::registry::{RegistryError, RepositorySession};

/// Limits of the content fetch, with units in their names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchLimits {
    /// Manifest, index and config limits (config bytes included).
    pub manifest: ManifestLimits,
    pub layer_downloads_max: usize,
    pub layer_resumes_max: u32,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            manifest: ManifestLimits::default(),
            layer_downloads_max: 3,
            layer_resumes_max: 5,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error("image {reference}: {source}")]
    Manifest {
        reference: String,
        #[source]
        source: ManifestError,
    },
    #[error("image {reference} has no manifest for platform {wanted} (it offers: {available})")]
    NoMatchingPlatform {
        reference: String,
        wanted: String,
        available: String,
    },
    #[error("image {reference}: index entry {digest} is not an image manifest")]
    NestedIndex { reference: String, digest: Digest },
    #[error(
        "image {reference}: its config lists {diff_ids} layer diff ids but its manifest has {layers} layers"
    )]
    LayerCountMismatch {
        reference: String,
        diff_ids: usize,
        layers: usize,
    },
}

/// Everything a pull fetched, all of it stored and leased.
#[derive(Clone, Debug)]
pub struct FetchedImage {
    /// What the reference resolved to (an index or a manifest).
    pub target: Descriptor,
    pub manifest: Descriptor,
    pub image_manifest: ImageManifest,
    pub config: ImageConfig,
    pub layers: Vec<IngestOutcome>,
}

impl FetchedImage {
    pub fn downloaded_bytes(&self) -> u64 {
        self.layers.iter().map(|layer| layer.downloaded_bytes).sum()
    }
}

/// Layer bytes of `layers` not downloaded because they were stored already:
/// whole blobs, and the part of a partial download that was resumed.
pub fn skipped_bytes(layers: &[IngestOutcome]) -> u64 {
    layers
        .iter()
        .map(|layer| {
            if layer.already_present {
                layer.blob.size_bytes
            } else {
                layer.resumed_from_bytes
            }
        })
        .sum()
}

/// A blob's bytes from the registry, resumable at an offset.
pub struct RegistryBlobSource<'a> {
    session: &'a RepositorySession,
    descriptor: Descriptor,
    /// The endpoint to try first (a resume moves past the one that failed).
    first_endpoint: usize,
    /// Whether the request was answered; after that, a failure is the stream's.
    opened: bool,
    /// Where this layer's bytes are counted, and its index in the manifest.
    progress: (&'a PullProgress, usize),
}

impl BlobSource for RegistryBlobSource<'_> {
    type Error = RegistryError;

    async fn open(
        &mut self,
        offset_bytes: u64,
    ) -> Result<OpenedBlob<RegistryError>, RegistryError> {
        let blob = self
            .session
            .open_blob_from_endpoint(&self.descriptor, offset_bytes, self.first_endpoint)
            .await?;
        self.opened = true;
        let (progress, index) = self.progress;
        progress.download_at(index, blob.offset_bytes);
        // The stream is 'static, so it counts into a shared counter handle
        // rather than borrowing the progress.
        let stream = match progress.byte_counter(index) {
            None => blob.stream,
            Some(counter) => blob
                .stream
                .inspect(move |chunk| {
                    if let Ok(chunk) = chunk {
                        counter.add(chunk.len() as u64);
                    }
                })
                .boxed(),
        };
        Ok(OpenedBlob {
            offset_bytes: blob.offset_bytes,
            stream,
        })
    }
}

/// Bytes already in memory (a manifest or config fetched and verified whole).
struct InMemorySource(Bytes);

impl BlobSource for InMemorySource {
    type Error = Infallible;

    async fn open(&mut self, _offset_bytes: u64) -> Result<OpenedBlob<Infallible>, Infallible> {
        let bytes = self.0.clone();
        Ok(OpenedBlob {
            offset_bytes: 0,
            stream: futures_util::stream::once(async move { Ok(bytes) }).boxed(),
        })
    }
}

/// Fetches everything `reference` needs for `platform` into `store`, under
/// `lease_id`, reporting to nobody.
pub async fn fetch_image(
    session: &RepositorySession,
    store: &ContentStore,
    reference: &ImageReference,
    platform: &Platform,
    lease_id: &str,
    limits: &FetchLimits,
) -> Result<FetchedImage, FetchError> {
    let progress = PullProgress::new();
    let download_slots = tokio::sync::Semaphore::new(limits.layer_downloads_max.max(1));
    let shared = FetchShared {
        progress: &progress,
        download_slots: &download_slots,
    };
    let resolved = resolve_image(
        session, store, reference, platform, lease_id, limits, &progress,
    )
    .await?;
    let layers = fetch_layers(
        session,
        store,
        &resolved,
        lease_id,
        limits,
        shared,
        Vec::new(),
    )
    .await?;
    Ok(FetchedImage {
        target: resolved.target,
        manifest: resolved.manifest,
        image_manifest: resolved.image_manifest,
        config: resolved.config,
        layers,
    })
}

/// What a fetch shares with the rest of the node.
#[derive(Clone, Copy)]
pub struct FetchShared<'a> {
    /// Where the pull's progress is reported.
    pub progress: &'a PullProgress,
    /// Node-wide: each layer download holds one while it runs.
    pub download_slots: &'a tokio::sync::Semaphore,
}

/// What a reference resolved to, with its manifests and config stored and
/// leased: everything of an image but its layers.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// What the reference resolved to (an index or a manifest).
    pub target: Descriptor,
    pub manifest: Descriptor,
    pub image_manifest: ImageManifest,
    pub config: ImageConfig,
}

/// Resolves `reference` for `platform` and stores its index, manifest and
/// config under `lease_id`.
pub async fn resolve_image(
    session: &RepositorySession,
    store: &ContentStore,
    reference: &ImageReference,
    platform: &Platform,
    lease_id: &str,
    limits: &FetchLimits,
    progress: &PullProgress,
) -> Result<ResolvedImage, FetchError> {
    let reference_text = reference.to_string();
    let manifest_error = |source| FetchError::Manifest {
        reference: reference_text.clone(),
        source,
    };
    let resolved = session
        .resolve(reference)
        .instrument(tracing::info_span!("resolve", reference = %reference))
        .await?;
    tracing::info!(
        reference = %reference,
        digest = %resolved.descriptor.digest,
        media_type = %resolved.descriptor.media_type,
        endpoint = %resolved.endpoint,
        "reference resolved"
    );
    let target = resolved.descriptor.clone();
    let decoded = decode_manifest(
        &resolved.bytes,
        content_type(&resolved.descriptor),
        &limits.manifest,
    )
    .map_err(manifest_error)?;

    let (manifest_descriptor, image_manifest) = match decoded {
        Manifest::Image(image_manifest) => (resolved.descriptor.clone(), image_manifest),
        Manifest::Index(index) => {
            // containerd's order: best platform rank, then more os.features,
            // then index order; entries without a platform come last.
            let matcher = PlatformMatcher::new(platform);
            let chosen = matcher
                .order_candidates(index.platforms())
                .first()
                .map(|position| index.manifests[*position].clone())
                .ok_or_else(|| FetchError::NoMatchingPlatform {
                    reference: reference_text.clone(),
                    wanted: platform.to_string(),
                    available: index
                        .manifests
                        .iter()
                        .filter_map(|entry| entry.platform.as_ref().map(ToString::to_string))
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            let children: Vec<Digest> = index
                .manifests
                .iter()
                .map(|entry| entry.descriptor.digest.clone())
                .collect();
            store_bytes(
                store,
                &resolved.descriptor,
                &children,
                resolved.bytes.clone(),
                lease_id,
            )
            .await?;
            let fetched = session.fetch_manifest(&chosen.descriptor).await?;
            let media_type = if fetched.descriptor.media_type.is_empty() {
                chosen.descriptor.media_type.clone()
            } else {
                fetched.descriptor.media_type.clone()
            };
            let manifest = decode_manifest(&fetched.bytes, Some(&media_type), &limits.manifest)
                .map_err(manifest_error)?;
            let Manifest::Image(image_manifest) = manifest else {
                return Err(FetchError::NestedIndex {
                    reference: reference_text.clone(),
                    digest: chosen.descriptor.digest.clone(),
                });
            };
            let mut descriptor = chosen.descriptor.clone();
            descriptor.size_bytes = fetched.bytes.len() as u64;
            store_manifest(store, &descriptor, &image_manifest, fetched.bytes, lease_id).await?;
            (descriptor, image_manifest)
        }
    };
    if manifest_descriptor == resolved.descriptor {
        store_manifest(
            store,
            &manifest_descriptor,
            &image_manifest,
            resolved.bytes,
            lease_id,
        )
        .await?;
    }

    let config_bytes = match store.attach_if_present(&image_manifest.config.digest, lease_id)? {
        Some(_) => store.read_verified(
            &image_manifest.config.digest,
            limits.manifest.config_bytes_max,
        )?,
        None => {
            let bytes = session
                .fetch_blob_bytes(&image_manifest.config, limits.manifest.config_bytes_max)
                .await?;
            store_bytes(store, &image_manifest.config, &[], bytes.clone(), lease_id).await?;
            bytes
        }
    };
    let config = decode_config(&config_bytes, &limits.manifest).map_err(manifest_error)?;
    if config.diff_ids.len() != image_manifest.layers.len() {
        return Err(FetchError::LayerCountMismatch {
            reference: reference_text,
            diff_ids: config.diff_ids.len(),
            layers: image_manifest.layers.len(),
        });
    }

    progress.resolved(
        &manifest_descriptor.digest,
        &image_manifest.config.digest,
        &image_manifest.layers,
    );
    Ok(ResolvedImage {
        target,
        manifest: manifest_descriptor,
        image_manifest,
        config,
    })
}

/// Downloads every layer of `resolved` into `store` under `lease_id`, at most
/// `layer_downloads_max` at once for this pull and within the node's slots.
/// `taps[i]`, when given, is layer i's tap: it is dropped as soon as that
/// layer's download ends, so a reader following a failed download gets its
/// error at once rather than when every layer is done.
pub async fn fetch_layers(
    session: &RepositorySession,
    store: &ContentStore,
    resolved: &ResolvedImage,
    lease_id: &str,
    limits: &FetchLimits,
    shared: FetchShared<'_>,
    taps: Vec<BlobTap>,
) -> Result<Vec<IngestOutcome>, FetchError> {
    let FetchShared {
        progress,
        download_slots,
    } = shared;
    let image_manifest = &resolved.image_manifest;
    let mut taps: Vec<Option<BlobTap>> = taps.into_iter().map(Some).collect();
    taps.resize_with(image_manifest.layers.len(), || None);

    // Boxed so the stream's item type names no closure lifetimes, which keeps
    // the whole pull future `Send` for the gRPC server.
    type Download<'a> =
        futures_util::future::BoxFuture<'a, Result<(usize, IngestOutcome), FetchError>>;
    let mut downloads: Vec<Download<'_>> = Vec::with_capacity(image_manifest.layers.len());
    for ((index, layer), tap) in image_manifest.layers.iter().enumerate().zip(taps) {
        let layer = layer.clone();
        let resumes_max = limits.layer_resumes_max;
        let span = tracing::info_span!("fetch_layer", digest = %layer.digest);
        downloads.push(Box::pin(
            async move {
                // Owned by this download: dropped (ending its readers) when it ends.
                let _tap = tap;
                // Never closed, so a failed acquire cannot happen; without a
                // slot the download would merely run unbounded.
                let _slot = download_slots.acquire().await.ok();
                progress.download_started(index);
                let started = std::time::Instant::now();
                let outcome = fetch_layer(
                    session,
                    store,
                    &layer,
                    lease_id,
                    resumes_max,
                    (progress, index),
                )
                .await?;
                progress.download_finished(index, outcome.already_present);
                tracing::info!(
                    size_bytes = layer.size_bytes,
                    downloaded_bytes = outcome.downloaded_bytes,
                    already_present = outcome.already_present,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "layer fetched"
                );
                Ok((index, outcome))
            }
            .instrument(span),
        ));
    }
    let mut layers: Vec<(usize, IngestOutcome)> = futures_util::stream::iter(downloads)
        .buffer_unordered(limits.layer_downloads_max.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, FetchError>>()?;
    layers.sort_by_key(|(index, _)| *index);
    Ok(layers.into_iter().map(|(_, outcome)| outcome).collect())
}

/// One layer, resumed after transient stream failures.
async fn fetch_layer(
    session: &RepositorySession,
    store: &ContentStore,
    layer: &Descriptor,
    lease_id: &str,
    resumes_max: u32,
    progress: (&PullProgress, usize),
) -> Result<IngestOutcome, FetchError> {
    let mut resumes = 0;
    loop {
        let mut source = RegistryBlobSource {
            session,
            descriptor: layer.clone(),
            first_endpoint: resumes as usize % session.endpoint_count().max(1),
            opened: false,
            progress,
        };
        let request = IngestRequest {
            expected: layer,
            children: &[],
            lease_id,
        };
        match store.ingest(request, &mut source).await {
            Ok(outcome) => return Ok(outcome),
            // Only a stream that broke after its request was answered is
            // resumed: a request that failed has had its retries already.
            Err(IngestError::Source(error))
                if source.opened && error.is_transient() && resumes < resumes_max =>
            {
                resumes += 1;
                tracing::info!(
                    digest = %layer.digest,
                    attempt = resumes,
                    error = %error,
                    "layer download interrupted, resuming"
                );
            }
            Err(IngestError::Source(error)) => return Err(FetchError::Registry(error)),
            Err(IngestError::Content(error)) => return Err(FetchError::Content(error)),
        }
    }
}

async fn store_manifest(
    store: &ContentStore,
    descriptor: &Descriptor,
    manifest: &ImageManifest,
    bytes: Vec<u8>,
    lease_id: &str,
) -> Result<(), FetchError> {
    let children: Vec<Digest> = std::iter::once(manifest.config.digest.clone())
        .chain(manifest.layers.iter().map(|layer| layer.digest.clone()))
        .collect();
    store_bytes(store, descriptor, &children, bytes, lease_id).await
}

/// Stores verified in-memory bytes as a blob (re-verified by the ingest).
async fn store_bytes(
    store: &ContentStore,
    descriptor: &Descriptor,
    children: &[Digest],
    bytes: Vec<u8>,
    lease_id: &str,
) -> Result<(), FetchError> {
    let mut source = InMemorySource(Bytes::from(bytes));
    let request = IngestRequest {
        expected: descriptor,
        children,
        lease_id,
    };
    match store.ingest(request, &mut source).await {
        Ok(_) => Ok(()),
        Err(IngestError::Content(error)) => Err(FetchError::Content(error)),
        Err(IngestError::Source(never)) => match never {},
    }
}

fn content_type(descriptor: &Descriptor) -> Option<&str> {
    Some(descriptor.media_type.as_str()).filter(|media_type| !media_type.is_empty())
}
