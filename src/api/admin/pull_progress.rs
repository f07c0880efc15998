//! PullWithProgress: a pull like CRI PullImage, streaming layer progress.
//!
//! The pull goes through [`ImageService::start_pull`], the same path as
//! PullImage, so validation, deduplication, limits, results and errors are
//! the same; every error, validation included, arrives as the stream's final
//! status. The stream sends `resolved` once, then layer events: a layer is
//! sent when its state changes, and otherwise at most every
//! [`BYTES_EVENT_INTERVAL_MS`] while its byte count moves; `done` comes last.
//! A client that goes away stops only its own stream: the pull runs in its
//! own task and may be shared by other callers.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::convert;
use crate::api::proto::cri_imaged::admin::v1 as admin;
use crate::api::status::to_status;
use crate::image_service::pull_progress::{LayerProgress, LayerState, ProgressSnapshot};
use crate::image_service::{ImageService, PullRequest, StartedPull};

pub type ProgressStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<admin::PullProgress, tonic::Status>> + Send>>;

/// The shortest time between two byte-count events of one layer.
const BYTES_EVENT_INTERVAL_MS: u64 = 150;
/// Events buffered for a slow client before the stream waits for it (the
/// pull itself never waits: it only writes atomics and a watch).
const EVENTS_BUFFERED_MAX: usize = 32;

type Events = tokio::sync::mpsc::Sender<Result<admin::PullProgress, tonic::Status>>;

pub async fn pull_with_progress(
    service: &Arc<ImageService>,
    request: admin::PullWithProgressRequest,
) -> Result<tonic::Response<ProgressStream>, tonic::Status> {
    let spec = request.image.unwrap_or_default();
    let pull = PullRequest {
        image: spec.image,
        auth: convert::auth(request.auth),
        runtime_handler: spec.runtime_handler,
    };
    let (sender, receiver) = tokio::sync::mpsc::channel(EVENTS_BUFFERED_MAX);
    match service.start_pull(&pull) {
        Ok(started) => {
            tokio::spawn(stream_progress(started, sender));
        }
        Err(error) => {
            // The buffer is empty, so this cannot wait or fail for room.
            let _ = sender.try_send(Err(to_status(&error)));
        }
    }
    Ok(tonic::Response::new(Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(receiver),
    )))
}

/// Sends the events of `started` until it ends or the client goes away.
async fn stream_progress(started: StartedPull, events: Events) {
    let progress = started.progress.clone();
    let mut changes = progress.changes();
    let outcome = started.outcome();
    tokio::pin!(outcome);
    let mut ticks = tokio::time::interval(Duration::from_millis(BYTES_EVENT_INTERVAL_MS));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = SentEvents::default();
    loop {
        let pass = tokio::select! {
            biased;
            () = events.closed() => return,
            result = &mut outcome => {
                // The final states (done/reused, every byte) before the end.
                let final_pass = sent.events(&progress.snapshot(), Instant::now(), true);
                let last = match result {
                    Ok(id) => Ok(admin::PullProgress {
                        event: Some(admin::pull_progress::Event::Done(admin::PullDone {
                            image_ref: id.to_string(),
                        })),
                    }),
                    Err(error) => Err(to_status(&error)),
                };
                for event in final_pass {
                    if events.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                let _ = events.send(last).await;
                return;
            }
            // `changed` never reports a closed channel here: this task holds
            // the progress, and with it the sender.
            _ = changes.changed() => sent.events(&progress.snapshot(), Instant::now(), false),
            _ = ticks.tick() => sent.events(&progress.snapshot(), Instant::now(), false),
        };
        for event in pass {
            if events.send(Ok(event)).await.is_err() {
                return;
            }
        }
    }
}

/// What one stream has sent so far, to send only what changed.
#[derive(Default)]
struct SentEvents {
    resolved: bool,
    /// Per layer: the last event sent and when.
    layers: Vec<Option<(LayerProgress, Instant)>>,
}

impl SentEvents {
    /// The events `snapshot` calls for: `resolved` the first time it is
    /// known, layers whose state changed, and layers whose bytes moved if
    /// their last event is old enough (or at once when `flush`).
    fn events(
        &mut self,
        snapshot: &ProgressSnapshot,
        now: Instant,
        flush: bool,
    ) -> Vec<admin::PullProgress> {
        let mut events = Vec::new();
        let Some(resolved) = &snapshot.resolved else {
            return events;
        };
        if !self.resolved {
            self.resolved = true;
            self.layers = vec![None; snapshot.layers.len()];
            events.push(admin::PullProgress {
                event: Some(admin::pull_progress::Event::Resolved(admin::PullResolved {
                    manifest_digest: resolved.manifest_digest.to_string(),
                    config_digest: resolved.config_digest.to_string(),
                    layer_count: u32::try_from(resolved.layer_count).unwrap_or(u32::MAX),
                    total_bytes: resolved.total_bytes,
                })),
            });
        }
        let interval = Duration::from_millis(BYTES_EVENT_INTERVAL_MS);
        for (layer, last) in snapshot.layers.iter().zip(self.layers.iter_mut()) {
            let due = match last {
                None => true,
                Some((previous, at)) => {
                    previous.state != layer.state
                        || previous.extracted != layer.extracted
                        || (previous.downloaded_bytes != layer.downloaded_bytes
                            && (flush || now.duration_since(*at) >= interval))
                }
            };
            if due {
                *last = Some((layer.clone(), now));
                events.push(admin::PullProgress {
                    event: Some(admin::pull_progress::Event::Layer(layer_event(layer))),
                });
            }
        }
        events
    }
}

fn layer_event(layer: &LayerProgress) -> admin::LayerProgress {
    admin::LayerProgress {
        digest: layer.digest.to_string(),
        media_type: layer.media_type.clone(),
        total_bytes: layer.total_bytes,
        downloaded_bytes: layer.downloaded_bytes,
        extracted: layer.extracted,
        state: layer_state(layer.state) as i32,
    }
}

fn layer_state(state: LayerState) -> admin::LayerState {
    match state {
        LayerState::Queued => admin::LayerState::Queued,
        LayerState::Downloading => admin::LayerState::Downloading,
        LayerState::Extracting => admin::LayerState::Extracting,
        LayerState::Done => admin::LayerState::Done,
        LayerState::Reused => admin::LayerState::Reused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_service::pull_progress::ResolvedPull;
    use crate::reference::Digest;

    fn snapshot(state: LayerState, downloaded_bytes: u64) -> ProgressSnapshot {
        let digest = Digest::from_sha256_bytes([7; 32]);
        ProgressSnapshot {
            resolved: Some(ResolvedPull {
                manifest_digest: digest.clone(),
                config_digest: digest.clone(),
                layer_count: 1,
                total_bytes: 100,
            }),
            layers: vec![LayerProgress {
                digest,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".to_owned(),
                total_bytes: 100,
                downloaded_bytes,
                extracted: false,
                state,
            }],
        }
    }

    fn kinds(events: &[admin::PullProgress]) -> Vec<String> {
        events
            .iter()
            .map(|event| match event.event.as_ref().unwrap() {
                admin::pull_progress::Event::Resolved(_) => "resolved".to_owned(),
                admin::pull_progress::Event::Layer(layer) => {
                    format!("{:?} {}", layer.state(), layer.downloaded_bytes)
                }
                admin::pull_progress::Event::Done(_) => "done".to_owned(),
            })
            .collect()
    }

    #[test]
    fn state_changes_go_at_once_and_byte_counts_at_most_every_interval() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut sent = SentEvents::default();
        assert!(
            sent.events(&ProgressSnapshot::default(), at(0), false)
                .is_empty()
        );
        assert_eq!(
            kinds(&sent.events(&snapshot(LayerState::Queued, 0), at(0), false)),
            ["resolved", "Queued 0"]
        );
        assert!(
            sent.events(&snapshot(LayerState::Queued, 0), at(1), false)
                .is_empty()
        );
        assert_eq!(
            kinds(&sent.events(&snapshot(LayerState::Downloading, 0), at(2), false)),
            ["Downloading 0"]
        );
        // Bytes moved too soon after the last event: held back.
        assert!(
            sent.events(&snapshot(LayerState::Downloading, 10), at(50), false)
                .is_empty()
        );
        assert_eq!(
            kinds(&sent.events(&snapshot(LayerState::Downloading, 20), at(160), false)),
            ["Downloading 20"]
        );
        // The final pass sends the last count whatever the time.
        assert_eq!(
            kinds(&sent.events(&snapshot(LayerState::Downloading, 30), at(170), true)),
            ["Downloading 30"]
        );
        assert_eq!(
            kinds(&sent.events(&snapshot(LayerState::Done, 100), at(171), false)),
            ["Done 100"]
        );
    }
}
