//! One pull, start to finish:
//! 1. take a lease (expiry and this boot's id recorded);
//! 2. fetch every blob into the content store under it (`fetch`);
//! 3. record the image `pulling` (unless it is already ready: a re-pull never
//!    hides a ready image);
//! 4. unpack every layer at once into snapshots, then commit them base first;
//! 5. in ONE transaction: mark the image ready, point its tag and digest names
//!    at it, and release the lease.
//!
//! A crash anywhere before step 5 commits leaves nothing visible: the image is
//! `pulling` (never listed) and reconciliation reclaims it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::content_store::ContentStore;
use futures_util::FutureExt;
use tracing::Instrument as _;

use crate::image_service::fetch::{FetchLimits, FetchedImage, fetch_image};
use crate::image_service::inflight_pulls::{PullKey, PullLimits, PullRefused};
use crate::image_service::{ImageService, ServiceError};
use crate::metadata::{Image, ImageState, Lease, LeaseResource};
use crate::metrics::{Metrics, PullResult};
use crate::oci::manifest::layer_compression;
use crate::oci::platform::Platform;
use crate::reference::{Digest, ImageReference};
use crate::registry::{AuthConfigFields, RegistryCredentials};
use crate::snapshot_store::{LayerSnapshot, PrepareError, UnpackedSize, chain_ids};
use crate::unpack::{UnpackError, UnpackOptions, sync_filesystem_of, unpack_layer};

/// What a client asked to pull.
#[derive(Clone, Debug, Default)]
pub struct PullRequest {
    pub image: String,
    pub auth: AuthConfigFields,
    pub runtime_handler: String,
}

/// Settings of pulls, with units in their names.
#[derive(Clone, Debug)]
pub struct PullSettings {
    pub default_platform: Platform,
    /// Runtime handler name -> the platform its images are pulled for.
    pub runtime_handlers: BTreeMap<String, Platform>,
    pub fetch: FetchLimits,
    /// How long a pull's lease protects what it stored without renewal.
    pub lease_duration_ms: u64,
    pub unpack: UnpackOptions,
    pub extractions_max: usize,
    pub limits: PullLimits,
}

impl Default for PullSettings {
    fn default() -> Self {
        PullSettings {
            default_platform: Platform::host_default(),
            runtime_handlers: BTreeMap::new(),
            fetch: FetchLimits::default(),
            lease_duration_ms: 60 * 60 * 1000,
            unpack: UnpackOptions::for_current_user(),
            extractions_max: std::thread::available_parallelism().map_or(2, usize::from),
            limits: PullLimits::default(),
        }
    }
}

impl ImageService {
    /// Pulls `request.image`; returns the image id (its config digest).
    /// Concurrent calls for the same reference, credentials and platform share
    /// one pull (see `inflight_pulls`).
    pub async fn pull_image(
        self: &Arc<Self>,
        request: &PullRequest,
    ) -> Result<Digest, Arc<ServiceError>> {
        let reference = ImageReference::parse_docker_ref(&request.image);
        let recording = PullRecording::start(
            &self.metrics,
            reference
                .as_ref()
                .map_or(crate::metrics::OTHER, ImageReference::domain),
        );
        let outcome = match reference {
            Ok(reference) => self.pull_parsed(request, reference).await,
            Err(source) => Err(Arc::new(ServiceError::InvalidReference {
                input: crate::reference::bounded_echo(&request.image),
                source,
            })),
        };
        recording.finish(match &outcome {
            Ok(_) => PullResult::Ok,
            Err(error) => error.pull_result(),
        });
        outcome
    }

    async fn pull_parsed(
        self: &Arc<Self>,
        request: &PullRequest,
        reference: ImageReference,
    ) -> Result<Digest, Arc<ServiceError>> {
        let credentials = RegistryCredentials::from_auth_config(&request.auth)
            .map_err(ServiceError::InvalidAuth)?;
        let platform = self.platform_for(&request.runtime_handler)?;
        let key = PullKey {
            reference: reference.clone(),
            credentials: credentials.clone(),
            platform: platform.clone(),
        };
        let service = self.clone();
        let registry = reference.domain().to_owned();
        let span = tracing::info_span!("pull", reference = %reference);
        let pull = async move {
            service
                .pull_uncached(reference, credentials, platform)
                .await
                .map_err(Arc::new)
        }
        .instrument(span)
        .boxed();
        let (joined, outcome) = self
            .inflight
            .join_or_start(key, pull, |refused| match refused {
                PullRefused::QueueFull { queued } => ServiceError::TooManyPulls { queued },
                PullRefused::TaskFailed { detail } => ServiceError::PullTaskFailed { detail },
            });
        if joined {
            self.metrics.record_pull_deduplicated(&registry);
            tracing::info!(reference = %request.image, "joined a pull in flight");
        }
        outcome.await
    }

    async fn pull_uncached(
        &self,
        reference: ImageReference,
        credentials: RegistryCredentials,
        platform: Platform,
    ) -> Result<Digest, ServiceError> {
        let lease_id = format!("pull-{}", uuid::Uuid::new_v4().simple());
        let now = crate::metadata::unix_millis_now();
        let lease = Lease {
            id: lease_id.clone(),
            created_unix_ms: now,
            expires_unix_ms: now + self.settings.lease_duration_ms,
            boot_id: self.boot_id.clone(),
            labels: BTreeMap::from([("cri-imaged/reference".to_owned(), reference.to_string())]),
        };
        self.metadata.write(|txn| txn.put_lease(&lease))?;
        let started = std::time::Instant::now();
        let pulled = self
            .pull_under_lease(&reference, credentials, &platform, &lease_id)
            .await;
        if pulled.is_err() {
            // What was stored stays until gc; the lease no longer protects it.
            if let Err(error) = self.metadata.write(|txn| txn.remove_lease(&lease_id)) {
                tracing::warn!(lease = %lease_id, %error, "cannot release the lease of a failed pull");
            }
        }
        if pulled.is_ok() {
            self.usage_changed();
        }
        match &pulled {
            Ok(id) => tracing::info!(
                reference = %reference,
                image = %id,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "image pulled"
            ),
            Err(error) => tracing::warn!(reference = %reference, %error, "pull failed"),
        }
        pulled
    }

    fn platform_for(&self, runtime_handler: &str) -> Result<Platform, ServiceError> {
        if runtime_handler.is_empty() {
            return Ok(self.settings.default_platform.clone());
        }
        self.settings
            .runtime_handlers
            .get(runtime_handler)
            .cloned()
            .ok_or_else(|| ServiceError::UnknownRuntimeHandler {
                name: crate::reference::bounded_echo(runtime_handler),
            })
    }

    async fn pull_under_lease(
        &self,
        reference: &ImageReference,
        credentials: RegistryCredentials,
        platform: &Platform,
        lease_id: &str,
    ) -> Result<Digest, ServiceError> {
        let session = self.registry.session(reference, credentials)?;
        let fetched = fetch_image(
            &session,
            &self.content,
            reference,
            platform,
            lease_id,
            &self.settings.fetch,
        )
        .await;
        // Counted whether or not the fetch succeeded: a failed pull's bytes
        // crossed the network too.
        self.metrics.record_pull_bytes(
            reference.domain(),
            session.received_bytes(),
            fetched.as_ref().map_or(0, FetchedImage::skipped_bytes),
        );
        self.metrics
            .record_mirror_fallbacks(reference.domain(), session.endpoint_fallbacks());
        let fetched = fetched?;
        let image = self.record_pulling(&fetched, reference, lease_id)?;
        let top_chain_id = self.unpack_all(&fetched, lease_id).await?;
        let id = image.id().clone();
        let mut names = Vec::new();
        if let Some(tag) = reference.tag() {
            names.push(reference.with_tag(tag).map_err(|source| {
                ServiceError::InvalidReference {
                    input: reference.to_string(),
                    source,
                }
            })?);
        }
        names.push(reference.with_digest(fetched.target.digest.clone()));
        crate::fail_point!("pull::before_ready_commit", ServiceError::ShuttingDown);
        // Entered, not instrumented: nothing is awaited from here on.
        let _commit = tracing::info_span!("commit", image = %id).entered();
        self.metadata.write(|txn| {
            let mut ready = txn.image(&id)?.unwrap_or(image.clone());
            ready.state = ImageState::Ready;
            ready.top_chain_id = top_chain_id.clone();
            ready.target = fetched.target.clone();
            ready.manifest = fetched.manifest.clone();
            ready.updated_unix_ms = txn.now_unix_ms();
            txn.put_image(&ready)?;
            for name in &names {
                txn.set_reference(name, &id)?;
            }
            txn.remove_lease(lease_id)?;
            Ok(())
        })?;
        crate::fail_point!("pull::after_ready_commit", ServiceError::ShuttingDown);
        Ok(id)
    }

    /// Records the image `pulling` under the lease; an image that is already
    /// ready stays ready (it is being re-pulled, not replaced).
    fn record_pulling(
        &self,
        fetched: &FetchedImage,
        reference: &ImageReference,
        lease_id: &str,
    ) -> Result<Image, ServiceError> {
        let size_bytes = fetched.manifest.size_bytes
            + fetched.image_manifest.config.size_bytes
            + fetched
                .image_manifest
                .layers
                .iter()
                .map(|layer| layer.size_bytes)
                .sum::<u64>();
        let chain = chain_ids(&fetched.config.diff_ids);
        let pulling = Image {
            target: fetched.target.clone(),
            manifest: fetched.manifest.clone(),
            config: fetched.image_manifest.config.clone(),
            top_chain_id: chain.last().cloned(),
            size_bytes: size_bytes.max(1),
            state: ImageState::Pulling,
            pinned: false,
            config_user: fetched.config.user.clone(),
            annotations: fetched.image_manifest.annotations.clone(),
            created_unix_ms: crate::metadata::unix_millis_now(),
            updated_unix_ms: crate::metadata::unix_millis_now(),
        };
        tracing::debug!(reference = %reference, image = %pulling.id(), "recording image as pulling");
        Ok(self.metadata.write(|txn| {
            let image = match txn.image(pulling.id())? {
                Some(existing) if existing.state == ImageState::Ready => existing,
                _ => {
                    txn.put_image(&pulling)?;
                    pulling.clone()
                }
            };
            txn.attach_to_lease(lease_id, &LeaseResource::Image(image.id().clone()))?;
            Ok(image)
        })?)
    }

    /// Unpacks every layer at once (up to `extractions_max`), then commits the
    /// snapshots base first. Returns the top chain id.
    async fn unpack_all(
        &self,
        fetched: &FetchedImage,
        lease_id: &str,
    ) -> Result<Option<Digest>, ServiceError> {
        use futures_util::StreamExt;
        let chain = chain_ids(&fetched.config.diff_ids);
        let layers: Vec<LayerSnapshot> = chain
            .iter()
            .enumerate()
            .map(|(index, chain_id)| LayerSnapshot {
                chain_id: chain_id.clone(),
                parent: index.checked_sub(1).map(|parent| chain[parent].clone()),
                diff_id: fetched.config.diff_ids[index].clone(),
            })
            .collect();
        type Preparation<'a> = futures_util::future::BoxFuture<
            'a,
            Result<crate::snapshot_store::PreparedSnapshot, PrepareError<LayerError>>,
        >;
        let mut preparations: Vec<Preparation<'_>> = Vec::with_capacity(layers.len());
        for (layer, blob) in layers.iter().zip(&fetched.image_manifest.layers) {
            let snapshots = self.snapshots.clone();
            let content = self.content.clone();
            let options = UnpackOptions {
                expected_diff_id: Some(layer.diff_id.clone()),
                ..self.settings.unpack.clone()
            };
            let blob = blob.clone();
            let layer = layer.clone();
            let lease_id = lease_id.to_owned();
            let span = tracing::info_span!(
                "unpack_layer",
                chain_id = %layer.chain_id,
                digest = %blob.digest
            );
            // The unpack runs on a blocking thread: it enters the span itself.
            let blocking_span = span.clone();
            preparations.push(Box::pin(
                async move {
                    let started = std::time::Instant::now();
                    let prepared = snapshots
                        .prepare(layer, &lease_id, move |directory| {
                            blocking_span
                                .in_scope(|| unpack_blob(&content, &blob, directory, &options))
                        })
                        .await;
                    if prepared.is_ok() {
                        tracing::info!(
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "layer unpacked"
                        );
                    }
                    prepared
                }
                .instrument(span),
            ));
        }
        let prepared: Vec<_> = futures_util::stream::iter(preparations)
            .buffered(self.settings.extractions_max.max(1))
            .collect()
            .await;
        let mut ready = Vec::with_capacity(prepared.len());
        for (result, layer) in prepared.into_iter().zip(&layers) {
            match result {
                Ok(prepared) => ready.push(prepared),
                Err(PrepareError::Unpack(source)) => {
                    return Err(ServiceError::Unpack {
                        chain_id: layer.chain_id.clone(),
                        source: Box::new(source),
                    });
                }
                Err(PrepareError::Snapshot(error)) => return Err(ServiceError::Snapshot(error)),
            }
        }
        // Entered, not instrumented: nothing is awaited from here on.
        let _commit = tracing::info_span!("commit_snapshots", layers = ready.len()).entered();
        for prepared in ready {
            self.snapshots.commit(prepared)?;
        }
        Ok(chain.last().cloned())
    }
}

/// Counts one PullImage request: started when created, finished with its
/// result by [`PullRecording::finish`], or as `cancelled` if the request's
/// future is dropped first (the client went away).
struct PullRecording<'a> {
    metrics: &'a Metrics,
    registry: String,
    started: std::time::Instant,
    finished: bool,
}

impl<'a> PullRecording<'a> {
    fn start(metrics: &'a Metrics, registry: &str) -> PullRecording<'a> {
        metrics.record_pull_started(registry);
        PullRecording {
            metrics,
            registry: registry.to_owned(),
            started: std::time::Instant::now(),
            finished: false,
        }
    }

    fn finish(mut self, result: PullResult) {
        self.record(result);
    }

    fn record(&mut self, result: PullResult) {
        if !self.finished {
            self.finished = true;
            self.metrics
                .record_pull_finished(&self.registry, result, self.started.elapsed());
        }
    }
}

impl Drop for PullRecording<'_> {
    fn drop(&mut self) {
        self.record(PullResult::Cancelled);
    }
}

/// Why one layer could not become a snapshot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error("cannot read the layer blob: {0}")]
    Blob(#[from] crate::content_store::ContentError),
    #[error("layer media type {0:?} cannot be unpacked")]
    MediaType(String),
}

/// Unpacks one stored layer blob into `directory` (blocking).
fn unpack_blob(
    content: &Arc<ContentStore>,
    blob: &crate::oci::Descriptor,
    directory: &std::path::Path,
    options: &UnpackOptions,
) -> Result<UnpackedSize, LayerError> {
    let compression = layer_compression(&blob.media_type)
        .ok_or_else(|| LayerError::MediaType(blob.media_type.clone()))?;
    let file = content.open_blob(&blob.digest)?;
    let reader = std::io::BufReader::with_capacity(1024 * 1024, file);
    let outcome = unpack_layer(reader, compression, directory, options)?;
    sync_filesystem_of(directory)?;
    Ok(UnpackedSize {
        size_bytes: outcome.size_bytes,
        inodes: outcome.inodes,
    })
}
