//! Ingest: stream -> partial file (hashed on the way) -> verify -> rename into
//! place -> record, with resumption from the last recorded offset.
//!
//! Order of durable steps, and what a crash between them leaves:
//! 1. ingest record committed, partial file created: a crash leaves a record
//!    (and maybe a file); the next ingest of the digest resumes or restarts.
//! 2. bytes appended; every `progress_record_interval_bytes` the file is synced
//!    and then its length recorded: a resume never trusts unsynced bytes.
//! 3. file synced, size and digest checked, renamed into `blobs/`, directory
//!    synced: a crash leaves a verified file that no record names yet, which
//!    reconciliation adopts or removes.
//! 4. one transaction records the blob, drops the ingest record and moves the
//!    lease from the ingest to the blob.

use std::future::Future;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::content_store::{BlobPaths, ContentError, ContentStore};
use crate::durable_fs;
use crate::metadata::{Blob, BlobState, Ingest, LeaseResource};
use crate::oci::Descriptor;
use crate::reference::{Digest, DigestHasher};

/// What to ingest and under which lease.
#[derive(Clone, Copy, Debug)]
pub struct IngestRequest<'a> {
    pub expected: &'a Descriptor,
    /// Digests this blob references (a manifest's config and layers), recorded
    /// as gc edges.
    pub children: &'a [Digest],
    /// The lease protecting the ingest and then the blob; it must exist.
    pub lease_id: &'a str,
}

/// A byte stream of a blob starting at `offset_bytes`.
pub struct OpenedBlob<E> {
    pub offset_bytes: u64,
    pub stream: BoxStream<'static, Result<Bytes, E>>,
}

/// Where a blob's bytes come from (the registry client, or a test).
pub trait BlobSource: Send {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Opens the blob at `offset_bytes`. A source that cannot serve a range
    /// returns the whole blob with `offset_bytes` 0, and the ingest restarts.
    fn open(
        &mut self,
        offset_bytes: u64,
    ) -> impl Future<Output = Result<OpenedBlob<Self::Error>, Self::Error>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError<E: std::error::Error + 'static> {
    /// The source failed; the partial file and its recorded offset are kept so
    /// that a later ingest of the same digest resumes.
    #[error(transparent)]
    Source(E),
    #[error(transparent)]
    Content(#[from] ContentError),
}

impl<E: std::error::Error + 'static> From<crate::metadata::MetadataError> for IngestError<E> {
    fn from(error: crate::metadata::MetadataError) -> Self {
        IngestError::Content(ContentError::Metadata(error))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestOutcome {
    pub blob: Blob,
    /// The blob was already stored; nothing was downloaded.
    pub already_present: bool,
    /// Bytes found on disk from an earlier, interrupted ingest.
    pub resumed_from_bytes: u64,
    /// Bytes received from the source by this ingest.
    pub downloaded_bytes: u64,
}

/// The partial file, moved into blocking tasks for each write and back.
struct PartialFile {
    path: PathBuf,
    file: std::fs::File,
    hasher: DigestHasher,
    written_bytes: u64,
}

enum FillError<E> {
    Source(E),
    Content(ContentError),
}

impl ContentStore {
    /// Downloads, verifies and records one blob; see the module docs for the
    /// order of steps. A second ingest of the same digest waits for the first
    /// and then reuses its blob.
    pub async fn ingest<S: BlobSource>(
        &self,
        request: IngestRequest<'_>,
        source: &mut S,
    ) -> Result<IngestOutcome, IngestError<S::Error>> {
        let digest = &request.expected.digest;
        let already_present = |blob: Blob| {
            self.publish_present(&blob);
            IngestOutcome {
                blob,
                already_present: true,
                resumed_from_bytes: 0,
                downloaded_bytes: 0,
            }
        };
        if let Some(blob) = self.attach_if_present(digest, request.lease_id)? {
            return Ok(already_present(blob));
        }
        let lock = self.ingest_lock(digest);
        let _turn = lock.lock().await;
        if let Some(blob) = self.attach_if_present(digest, request.lease_id)? {
            return Ok(already_present(blob));
        }

        let mut partial = Some(self.prepare_partial(&request).await?);
        if let Some(file) = &partial {
            self.taps
                .publish_file(digest, &file.file, file.written_bytes);
        }
        let filled = self.fill(&mut partial, &request, source).await;
        let Some(mut partial_file) = partial else {
            // The file was lost in a failed write task; start clean next time.
            self.discard_partial(&request)?;
            return Err(match filled {
                Err(FillError::Source(error)) => IngestError::Source(error),
                Err(FillError::Content(error)) => IngestError::Content(error),
                Ok(_) => IngestError::Content(ContentError::Io {
                    path: self.paths.partial(digest),
                    source: std::io::Error::other("partial file lost"),
                }),
            });
        };
        let resumed_from_bytes = match filled {
            Ok(started_at_bytes) => started_at_bytes,
            Err(FillError::Source(error)) => {
                // Keep what arrived for a resume; a failure to record it only
                // means the resume repeats more bytes.
                if let Err(record_error) = self.record_progress(&mut partial_file, &request) {
                    tracing::warn!(digest = %digest, error = %record_error, "cannot record ingest progress");
                }
                return Err(IngestError::Source(error));
            }
            Err(FillError::Content(error)) => {
                drop(partial_file);
                self.discard_partial(&request)?;
                return Err(IngestError::Content(error));
            }
        };
        let downloaded_bytes = partial_file.written_bytes - resumed_from_bytes;
        let blob = self.commit_partial(partial_file, &request).await?;
        Ok(IngestOutcome {
            blob,
            already_present: false,
            resumed_from_bytes,
            downloaded_bytes,
        })
    }

    /// Opens the partial file for this digest: resumes a recorded one (trusting
    /// only the recorded, synced prefix and re-hashing it), or starts afresh.
    async fn prepare_partial(
        &self,
        request: &IngestRequest<'_>,
    ) -> Result<PartialFile, ContentError> {
        let digest = request.expected.digest.clone();
        let key = BlobPaths::ingest_key(&digest);
        let path = self.paths.partial(&digest);
        let existing = self.metadata.read()?.ingest(&key)?;
        let resumable = existing.filter(|ingest| {
            ingest.expected_digest == digest
                && ingest.expected_size_bytes == request.expected.size_bytes
                && path.is_file()
        });
        let now = crate::metadata::unix_millis_now();
        let ingest = Ingest {
            key: key.clone(),
            expected_digest: digest.clone(),
            expected_size_bytes: request.expected.size_bytes,
            offset_bytes: resumable.as_ref().map_or(0, |ingest| ingest.offset_bytes),
            started_unix_ms: resumable
                .as_ref()
                .map_or(now, |ingest| ingest.started_unix_ms),
            updated_unix_ms: now,
        };
        // The record (and its lease) comes before the file, so a file in ingest/
        // always has a record unless a crash hit between the two (reconciliation
        // removes such files).
        self.metadata.write(|txn| {
            txn.put_ingest(&ingest)?;
            txn.attach_to_lease(request.lease_id, &LeaseResource::Ingest(key.clone()))
        })?;
        let recorded_offset = ingest.offset_bytes;
        let algorithm = digest.algorithm();
        spawn_blocking_io(move || -> Result<PartialFile, ContentError> {
            let io = ContentError::io(&path);
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            let on_disk = file.metadata().map_err(ContentError::io(&path))?.len();
            let keep = recorded_offset.min(on_disk);
            file.set_len(keep).map_err(ContentError::io(&path))?;
            let mut hasher = DigestHasher::new(algorithm);
            let mut buffer = vec![0; 1024 * 1024];
            let mut reader = (&file).take(keep);
            loop {
                let read = reader.read(&mut buffer).map_err(ContentError::io(&path))?;
                if read == 0 {
                    break;
                }
                hasher.update(&buffer[..read]);
            }
            file.seek(SeekFrom::Start(keep))
                .map_err(ContentError::io(&path))?;
            Ok(PartialFile {
                path,
                file,
                hasher,
                written_bytes: keep,
            })
        })
        .await
    }

    /// Streams the source into the partial file until it ends; returns the
    /// offset the source started at (0 when a resume had to start over).
    async fn fill<S: BlobSource>(
        &self,
        partial: &mut Option<PartialFile>,
        request: &IngestRequest<'_>,
        source: &mut S,
    ) -> Result<u64, FillError<S::Error>> {
        let expected_size_bytes = request.expected.size_bytes;
        let digest = &request.expected.digest;
        let requested_offset = partial.as_ref().map_or(0, |p| p.written_bytes);
        let opened = source
            .open(requested_offset)
            .await
            .map_err(FillError::Source)?;
        if opened.offset_bytes != requested_offset {
            // The source could not serve the range: start over from byte 0.
            let mut file = partial.take().expect("partial file present");
            file = spawn_blocking_io(move || -> Result<PartialFile, ContentError> {
                file.file.set_len(0).map_err(ContentError::io(&file.path))?;
                file.file
                    .seek(SeekFrom::Start(0))
                    .map_err(ContentError::io(&file.path))?;
                file.hasher = DigestHasher::new(file.hasher.algorithm());
                file.written_bytes = 0;
                Ok(file)
            })
            .await
            .map_err(FillError::Content)?;
            self.taps.publish_written(digest, 0);
            *partial = Some(file);
        }
        let started_at_bytes = opened.offset_bytes;
        let mut stream = opened.stream;
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batch_bytes = 0usize;
        let mut recorded_at = partial.as_ref().map_or(0, |p| p.written_bytes);
        loop {
            let next = stream.next().await;
            let chunk = match next {
                Some(Ok(chunk)) => Some(chunk),
                Some(Err(error)) => {
                    self.write_batch(partial, std::mem::take(&mut batch))
                        .await
                        .map_err(FillError::Content)?;
                    return Err(FillError::Source(error));
                }
                None => None,
            };
            let done = chunk.is_none();
            if let Some(chunk) = chunk {
                let written = partial.as_ref().map_or(0, |p| p.written_bytes);
                let received = written + batch_bytes as u64 + chunk.len() as u64;
                if received > expected_size_bytes {
                    return Err(FillError::Content(ContentError::SizeMismatch {
                        digest: digest.clone(),
                        expected_size_bytes,
                        received_size_bytes: received,
                    }));
                }
                batch_bytes += chunk.len();
                batch.push(chunk);
            }
            if batch_bytes >= self.limits.write_batch_bytes || (done && batch_bytes > 0) {
                self.write_batch(partial, std::mem::take(&mut batch))
                    .await
                    .map_err(FillError::Content)?;
                batch_bytes = 0;
                let written = partial.as_ref().map_or(0, |p| p.written_bytes);
                self.taps.publish_written(digest, written);
                if !done && written - recorded_at >= self.limits.progress_record_interval_bytes {
                    if let Some(file) = partial.as_mut() {
                        self.record_progress(file, request)
                            .map_err(FillError::Content)?;
                    }
                    recorded_at = written;
                }
            }
            if done {
                return Ok(started_at_bytes);
            }
        }
    }

    /// Appends and hashes a batch of chunks off the async runtime.
    async fn write_batch(
        &self,
        partial: &mut Option<PartialFile>,
        batch: Vec<Bytes>,
    ) -> Result<(), ContentError> {
        if batch.is_empty() {
            return Ok(());
        }
        let Some(mut file) = partial.take() else {
            return Ok(());
        };
        let file = spawn_blocking_io(move || -> Result<PartialFile, ContentError> {
            for chunk in &batch {
                file.file
                    .write_all(chunk)
                    .map_err(ContentError::io(&file.path))?;
                file.hasher.update(chunk);
                file.written_bytes += chunk.len() as u64;
            }
            Ok(file)
        })
        .await?;
        *partial = Some(file);
        Ok(())
    }

    /// Syncs the partial file, then records how much of it is safe to resume
    /// from. A relaxed commit: losing it in a crash only means a longer resume.
    fn record_progress(
        &self,
        partial: &mut PartialFile,
        request: &IngestRequest<'_>,
    ) -> Result<(), ContentError> {
        partial
            .file
            .sync_data()
            .map_err(ContentError::io(&partial.path))?;
        let key = BlobPaths::ingest_key(&request.expected.digest);
        let offset_bytes = partial.written_bytes;
        self.metadata.write_relaxed(|txn| {
            if let Some(mut ingest) = txn.ingest(&key)? {
                ingest.offset_bytes = offset_bytes;
                ingest.updated_unix_ms = txn.now_unix_ms();
                txn.put_ingest(&ingest)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Tells the taps on a blob that was already stored where to read it.
    fn publish_present(&self, blob: &Blob) {
        if !self.taps.has_taps(&blob.digest) {
            return;
        }
        match self.open_blob(&blob.digest) {
            Ok(file) => self
                .taps
                .publish_complete(&blob.digest, &file, blob.size_bytes),
            Err(error) => {
                tracing::warn!(digest = %blob.digest, %error, "cannot open a stored blob for its readers")
            }
        }
    }

    /// Removes the partial file, then its record.
    fn discard_partial(&self, request: &IngestRequest<'_>) -> Result<(), ContentError> {
        let digest = &request.expected.digest;
        let path = self.paths.partial(digest);
        durable_fs::remove_file_if_present(&path).map_err(ContentError::io(&path))?;
        let key = BlobPaths::ingest_key(digest);
        self.metadata.write(|txn| {
            txn.remove_ingest(&key)?;
            txn.detach_from_lease(request.lease_id, &LeaseResource::Ingest(key.clone()))?;
            Ok(())
        })?;
        Ok(())
    }

    /// Verifies size and digest, renames the file into place and records the blob.
    async fn commit_partial(
        &self,
        partial: PartialFile,
        request: &IngestRequest<'_>,
    ) -> Result<Blob, ContentError> {
        let expected = request.expected;
        if partial.written_bytes != expected.size_bytes {
            let received_size_bytes = partial.written_bytes;
            drop(partial);
            self.discard_partial(request)?;
            return Err(ContentError::SizeMismatch {
                digest: expected.digest.clone(),
                expected_size_bytes: expected.size_bytes,
                received_size_bytes,
            });
        }
        let destination = self.paths.blob(&expected.digest);
        let (received, file) = spawn_blocking_io(move || -> Result<_, ContentError> {
            partial
                .file
                .sync_all()
                .map_err(ContentError::io(&partial.path))?;
            Ok((partial.hasher.finish(), partial.file))
        })
        .await?;
        if received != expected.digest {
            self.discard_partial(request)?;
            return Err(ContentError::DigestMismatch {
                digest: expected.digest.clone(),
                received,
            });
        }
        let source_path = self.paths.partial(&expected.digest);
        {
            let destination = destination.clone();
            spawn_blocking_io(move || {
                durable_fs::rename_durably(&source_path, &destination)
                    .map_err(ContentError::io(&destination))
            })
            .await?;
        }
        crate::fail_point!(
            "content::after_rename_before_record",
            ContentError::FailPoint {
                name: "content::after_rename_before_record"
            }
        );
        let key = BlobPaths::ingest_key(&expected.digest);
        let blob = Blob {
            digest: expected.digest.clone(),
            media_type: expected.media_type.clone(),
            size_bytes: expected.size_bytes,
            state: BlobState::Present,
            children: request.children.to_vec(),
            created_unix_ms: crate::metadata::unix_millis_now(),
        };
        self.metadata.write(|txn| {
            txn.put_blob(&blob)?;
            txn.remove_ingest(&key)?;
            txn.detach_from_lease(request.lease_id, &LeaseResource::Ingest(key.clone()))?;
            txn.attach_to_lease(request.lease_id, &LeaseResource::Blob(blob.digest.clone()))
        })?;
        // The renamed file is the same inode: readers keep their place.
        self.taps
            .publish_complete(&blob.digest, &file, blob.size_bytes);
        Ok(blob)
    }
}

/// Runs blocking file work on tokio's blocking pool.
async fn spawn_blocking_io<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ContentError> + Send + 'static,
) -> Result<T, ContentError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join_error) => Err(ContentError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(format!("blocking task failed: {join_error}")),
        }),
    }
}
