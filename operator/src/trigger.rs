//! When to run a pass: on any change the watches see on MicroVMs or placeholder Pods, and on
//! a timer. Changes that arrive together make one pass (each pass reads everything anyway),
//! and a failing watch backs off instead of re-listing in a tight loop.

use std::time::Duration;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;

use crate::crd::MicroVM;

/// Wakes a pass loop.
pub struct Trigger {
    changes: BoxStream<'static, ()>,
    tick: tokio::time::Interval,
}

impl Trigger {
    /// Watches `mvms` and `pods` (with `pod_cfg`'s selectors), and ticks every `resync`.
    pub fn new(
        mvms: Api<MicroVM>,
        pods: Api<Pod>,
        pod_cfg: watcher::Config,
        resync: Duration,
    ) -> Self {
        let changes = futures::stream::select(
            watcher(mvms, watcher::Config::default())
                .default_backoff()
                .map(|_| ()),
            watcher(pods, pod_cfg).default_backoff().map(|_| ()),
        )
        .boxed();
        Trigger {
            changes,
            tick: tokio::time::interval(resync),
        }
    }

    /// Waits for a change or the timer, then takes every change already waiting.
    pub async fn next(&mut self) {
        tokio::select! {
            _ = self.tick.tick() => {}
            Some(()) = self.changes.next() => {}
        }
        while let Some(Some(())) = self.changes.next().now_or_never() {}
    }
}
