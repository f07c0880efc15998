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

use crate::content_store::{BlobTap, TapReader};
use futures_util::FutureExt;
use tracing::Instrument as _;

use crate::image_service::extraction_slots::{ExtractionSlot, LayerSlot};
use crate::image_service::fetch::{
    FetchLimits, FetchShared, ResolvedImage, fetch_layers, resolve_image, skipped_bytes,
};
use crate::image_service::inflight_pulls::{PullKey, PullLimits, PullRefused, SharedPull};
use crate::image_service::pull_progress::PullProgress;
use crate::image_service::{ImageService, ServiceError};
use crate::metadata::{Image, ImageState, Lease, LeaseResource};
use crate::metrics::{Metrics, PullResult};
use crate::oci::manifest::layer_compression;
use crate::oci::platform::Platform;
use crate::reference::{Digest, ImageReference};
use crate::registry::{AuthConfigFields, RegistryCredentials};
use crate::snapshot_store::{LayerSnapshot, PrepareError, UnpackedSize, chain_ids};
use crate::unpack::{UnpackError, UnpackOptions, unpack_layer_with_input_wait};

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
    pub limits: PullLimits,
    /// A pull still running this long after it started (after its turn in
    /// the queue) fails with a deadline error; `None` means no deadline.
    pub pull_deadline_ms: Option<u64>,
}

impl Default for PullSettings {
    fn default() -> Self {
        PullSettings {
            default_platform: Platform::host_default(),
            runtime_handlers: BTreeMap::new(),
            fetch: FetchLimits::default(),
            lease_duration_ms: 60 * 60 * 1000,
            unpack: UnpackOptions::for_current_user(),
            limits: PullLimits::default(),
            pull_deadline_ms: None,
        }
    }
}

/// A pull started (or joined): its live progress and its outcome.
pub struct StartedPull {
    pub progress: Arc<PullProgress>,
    /// Whether this call joined a pull another caller started.
    pub joined: bool,
    outcome: SharedPull<ServiceError>,
    /// Counts this request in the metrics when its outcome is known.
    recording: Option<PullRecording>,
}

impl StartedPull {
    /// Waits for the pull's outcome. Dropping this future does not cancel the
    /// pull: it runs in its own task and other callers may share it.
    pub async fn outcome(mut self) -> Result<Digest, Arc<ServiceError>> {
        let outcome = self.outcome.await;
        if let Some(recording) = self.recording.take() {
            recording.finish(match &outcome {
                Ok(_) => PullResult::Ok,
                Err(error) => error.pull_result(),
            });
        }
        outcome
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
        self.start_pull(request)?.outcome().await
    }

    /// Validates `request` and starts its pull, or joins the identical pull in
    /// flight. Every pull (CRI PullImage and the admin PullWithProgress) goes
    /// through here, so both get the same checks, sharing, results and
    /// metrics: each request is counted once, when its outcome is known (or
    /// as `cancelled` if it goes away first).
    pub fn start_pull(
        self: &Arc<Self>,
        request: &PullRequest,
    ) -> Result<StartedPull, ServiceError> {
        let reference = ImageReference::parse_docker_ref(&request.image);
        let recording = PullRecording::start(
            self.metrics.clone(),
            reference
                .as_ref()
                .map_or(crate::metrics::OTHER, ImageReference::domain),
        );
        let started = match reference {
            Ok(reference) => self.start_parsed(request, reference),
            Err(source) => Err(ServiceError::InvalidReference {
                input: crate::reference::bounded_echo(&request.image),
                source,
            }),
        };
        match started {
            Ok(mut started) => {
                started.recording = Some(recording);
                Ok(started)
            }
            Err(error) => {
                recording.finish(error.pull_result());
                Err(error)
            }
        }
    }

    fn start_parsed(
        self: &Arc<Self>,
        request: &PullRequest,
        reference: ImageReference,
    ) -> Result<StartedPull, ServiceError> {
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
        let start = move |progress: Arc<PullProgress>| {
            let span = tracing::info_span!("pull", reference = %reference);
            async move {
                service
                    .pull_within_deadline(reference, credentials, platform, progress)
                    .await
                    .map_err(Arc::new)
            }
            .instrument(span)
            .boxed()
        };
        let joined = self
            .inflight
            .join_or_start(key, start, |refused| match refused {
                PullRefused::QueueFull { queued } => ServiceError::TooManyPulls { queued },
                PullRefused::TaskFailed { detail } => ServiceError::PullTaskFailed { detail },
                PullRefused::Aborted => ServiceError::ShuttingDown,
            });
        if joined.joined {
            self.metrics.record_pull_deduplicated(&registry);
            tracing::info!(reference = %request.image, "joined a pull in flight");
        }
        Ok(StartedPull {
            progress: joined.progress,
            joined: joined.joined,
            outcome: joined.outcome,
            recording: None,
        })
    }

    /// Aborts every pull in flight (at shutdown, after the grace period);
    /// returns how many there were. What they stored stays under their leases.
    pub fn abort_pulls(&self) -> usize {
        self.inflight.abort_all()
    }

    /// Pulls, failing with [`ServiceError::PullDeadlineExceeded`] once the
    /// configured deadline has passed. The pull is not dropped at the
    /// deadline: its downloads stop and its unpacks fail their next read, so
    /// it unwinds through its own error path, which removes its unfinished
    /// snapshots and releases its lease (gc reclaims what it stored at once,
    /// and no unpack thread is left writing into a directory gc may take).
    async fn pull_within_deadline(
        &self,
        reference: ImageReference,
        credentials: RegistryCredentials,
        platform: Platform,
        progress: Arc<PullProgress>,
    ) -> Result<Digest, ServiceError> {
        let deadline = self.settings.pull_deadline_ms.map(PullDeadline::from_now);
        let text = reference.to_string();
        let pulled = self
            .pull_uncached(reference, credentials, platform, progress, deadline)
            .await;
        match (pulled, deadline) {
            (Err(error), Some(deadline)) if deadline.passed() => {
                tracing::warn!(reference = %text, deadline_ms = deadline.deadline_ms, %error, "pull deadline passed");
                Err(deadline.exceeded(text))
            }
            (pulled, _) => pulled,
        }
    }

    async fn pull_uncached(
        &self,
        reference: ImageReference,
        credentials: RegistryCredentials,
        platform: Platform,
        progress: Arc<PullProgress>,
        deadline: Option<PullDeadline>,
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
        // Renewed while the pull runs, so a slow but live download keeps it.
        let pulled = crate::gc::lease_renewal::renew_while(
            &self.metadata,
            &lease_id,
            self.settings.lease_duration_ms,
            self.pull_under_lease(
                &reference,
                credentials,
                &platform,
                (&lease_id, deadline),
                &progress,
            ),
        )
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
        (lease_id, deadline): (&str, Option<PullDeadline>),
        progress: &Arc<PullProgress>,
    ) -> Result<Digest, ServiceError> {
        let session = self.registry.session(reference, credentials)?;
        let shared = FetchShared {
            progress,
            download_slots: self.inflight.download_slots(),
        };
        let fetched = PullDeadline::stop_at(
            deadline,
            reference,
            resolve_image(
                &session,
                &self.content,
                reference,
                platform,
                lease_id,
                &self.settings.fetch,
                progress,
            ),
        )
        .await;
        let fetched = match fetched {
            Ok(fetched) => fetched,
            Err(error) => {
                self.record_transfer(reference, &session, 0);
                return Err(error);
            }
        };
        let chain = chain_ids(&fetched.config.diff_ids);
        let image = self.record_pulling(&fetched, &chain, reference, lease_id)?;
        // Each layer unpacks while it downloads, reading the bytes the ingest
        // writes through a tap; the snapshot commits only after the whole
        // blob was verified (the tap's end of file) and the diff id matched.
        let taps: Vec<BlobTap> = fetched
            .image_manifest
            .layers
            .iter()
            .map(|layer| self.content.tap(&layer.digest))
            .collect();
        let readers: Vec<TapReader> = taps.iter().map(BlobTap::reader).collect();
        // At the deadline the downloads are dropped, which ends their taps:
        // an unpack waiting for bytes fails at once, the others at their
        // next read, and their snapshots are cleaned up as for any failure.
        let downloading = PullDeadline::stop_at(
            deadline,
            reference,
            fetch_layers(
                &session,
                &self.content,
                &fetched,
                lease_id,
                &self.settings.fetch,
                shared,
                taps,
            ),
        );
        let unpacking = self.unpack_all(
            &fetched,
            &chain,
            readers,
            (lease_id, deadline.map(PullDeadline::std_instant)),
            progress,
        );
        let (downloaded, unpacked) = tokio::join!(downloading, unpacking);
        // Counted whether or not the fetch succeeded: a failed pull's bytes
        // crossed the network too.
        self.record_transfer(
            reference,
            &session,
            downloaded.as_deref().map_or(0, skipped_bytes),
        );
        // A failed download also fails its layer's unpack: report the cause.
        downloaded?;
        let top_chain_id = unpacked?;
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
        progress.all_layers_done();
        Ok(id)
    }

    /// Counts what `session` received and what was already stored.
    fn record_transfer(
        &self,
        reference: &ImageReference,
        session: &crate::registry::RepositorySession,
        skipped_bytes: u64,
    ) {
        self.metrics
            .record_pull_bytes(reference.domain(), session.received_bytes(), skipped_bytes);
        self.metrics
            .record_mirror_fallbacks(reference.domain(), session.endpoint_fallbacks());
    }

    /// Records the image `pulling` under the lease; an image that is already
    /// ready stays ready (it is being re-pulled, not replaced).
    fn record_pulling(
        &self,
        fetched: &ResolvedImage,
        chain: &[Digest],
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

    /// Unpacks every layer at once, as far as the node's extraction slots
    /// allow, then commits the snapshots base first. Returns the top chain id.
    async fn unpack_all(
        &self,
        fetched: &ResolvedImage,
        chain: &[Digest],
        readers: Vec<TapReader>,
        (lease_id, deadline): (&str, Option<std::time::Instant>),
        progress: &Arc<PullProgress>,
    ) -> Result<Option<Digest>, ServiceError> {
        use futures_util::StreamExt;
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
        for (index, ((layer, blob), reader)) in layers
            .iter()
            .zip(&fetched.image_manifest.layers)
            .zip(readers)
            .enumerate()
        {
            let snapshots = self.snapshots.clone();
            let options = UnpackOptions {
                expected_diff_id: Some(layer.diff_id.clone()),
                ..self.settings.unpack.clone()
            };
            let media_type = blob.media_type.clone();
            let layer = layer.clone();
            let lease_id = lease_id.to_owned();
            let progress = progress.clone();
            let extraction_slots = self.inflight.extraction_slots().clone();
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
                            // Runs only when the snapshot is not committed
                            // yet, under its chain lock; the slot is taken
                            // after the lock, once the blob has bytes.
                            progress.extraction_started(index);
                            let slot = extraction_slots.claim();
                            blocking_span.in_scope(|| {
                                let reader = UntilDeadline { reader, deadline };
                                unpack_blob(reader, &media_type, directory, &options, slot)
                            })
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
        // All at once: the node-wide slots are the limit, and a layer that
        // gave its slot back while its files reach the disk must not keep
        // the next one from taking it.
        let layer_count = preparations.len().max(1);
        let prepared: Vec<_> = futures_util::stream::iter(preparations)
            .buffered(layer_count)
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
struct PullRecording {
    metrics: Arc<Metrics>,
    registry: String,
    started: std::time::Instant,
    finished: bool,
}

impl PullRecording {
    fn start(metrics: Arc<Metrics>, registry: &str) -> PullRecording {
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

impl Drop for PullRecording {
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
    #[error("layer media type {0:?} cannot be unpacked")]
    MediaType(String),
    #[error("cannot read the layer blob as it downloads: {0}")]
    BlobStream(#[source] std::io::Error),
}

/// Unpacks one layer blob, read through its tap, into `directory`
/// (blocking). Reads the blob to its end, which the tap gives only once the
/// ingest has verified the whole blob. The files are not synced here: the
/// snapshot store's background sync makes them durable after the commit
/// (see [`crate::snapshot_store::sync`]). `extraction_slot` is held only
/// while there are bytes to unpack: not before the download's first bytes,
/// not while the unpack waits for more (see [`super::extraction_slots`]),
/// and not while the rest of the blob is verified.
fn unpack_blob(
    mut reader: UntilDeadline<TapReader>,
    media_type: &str,
    directory: &std::path::Path,
    options: &UnpackOptions,
    extraction_slot: ExtractionSlot,
) -> Result<UnpackedSize, LayerError> {
    let compression = layer_compression(media_type)
        .ok_or_else(|| LayerError::MediaType(media_type.to_owned()))?;
    let slot = LayerSlot::new(extraction_slot);
    reader.reader.set_wait_hook(slot.reader_hook());
    // Nothing is allocated for the layer before its bytes are there and it
    // has a slot.
    reader
        .reader
        .wait_for_bytes()
        .map_err(LayerError::BlobStream)?;
    let started = std::time::Instant::now();
    let mut reader = std::io::BufReader::with_capacity(1024 * 1024, reader);
    let outcome =
        unpack_layer_with_input_wait(&mut reader, compression, directory, options, Some(&*slot))?;
    let unpacked = started.elapsed();
    // The files are extracted: what is left is waiting for the blob's
    // verification and the disk, neither of which needs the slot.
    slot.give_back();
    // Bytes after the compressed stream's end are part of the blob too: wait
    // for its verification before the snapshot may be committed.
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(LayerError::BlobStream)?;
    reader.get_ref().reader.drop_cached_pages();
    // Where a layer's time goes: a slow verification means the download, a
    // slow unpack the CPU.
    tracing::debug!(
        unpack_ms = unpacked.as_millis() as u64,
        verify_ms = (started.elapsed() - unpacked).as_millis() as u64,
        "layer files written"
    );
    Ok(UnpackedSize {
        size_bytes: outcome.size_bytes,
        inodes: outcome.inodes,
    })
}

/// A pull's absolute deadline (`pull.deadline`), counted from its turn in
/// the queue.
#[derive(Clone, Copy, Debug)]
struct PullDeadline {
    at: tokio::time::Instant,
    deadline_ms: u64,
}

impl PullDeadline {
    fn from_now(deadline_ms: u64) -> PullDeadline {
        PullDeadline {
            at: tokio::time::Instant::now() + std::time::Duration::from_millis(deadline_ms),
            deadline_ms,
        }
    }

    fn passed(&self) -> bool {
        tokio::time::Instant::now() >= self.at
    }

    fn std_instant(self) -> std::time::Instant {
        self.at.into_std()
    }

    fn exceeded(&self, reference: String) -> ServiceError {
        ServiceError::PullDeadlineExceeded {
            reference,
            deadline_ms: self.deadline_ms,
        }
    }

    /// `work` until `deadline`, where it is dropped and the pull of
    /// `reference` fails with the deadline error.
    async fn stop_at<T, E: Into<ServiceError>>(
        deadline: Option<PullDeadline>,
        reference: &ImageReference,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, ServiceError> {
        let Some(deadline) = deadline else {
            return work.await.map_err(Into::into);
        };
        match tokio::time::timeout_at(deadline.at, work).await {
            Ok(done) => done.map_err(Into::into),
            Err(_elapsed) => Err(deadline.exceeded(reference.to_string())),
        }
    }
}

/// A layer's blob reader that fails once the pull's deadline has passed, so
/// an unpack whose bytes are all there stops too, through its error path.
struct UntilDeadline<R> {
    reader: R,
    deadline: Option<std::time::Instant>,
}

impl<R: std::io::Read> std::io::Read for UntilDeadline<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if self
            .deadline
            .is_some_and(|deadline| std::time::Instant::now() >= deadline)
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the pull's deadline passed",
            ));
        }
        self.reader.read(buffer)
    }
}
