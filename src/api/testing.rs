//! [`TestServer`]: the API over a [`FakeSupervisor`] on its own thread and actix system, on a
//! socket in a directory the test provides, for the integration tests of the API and of
//! hearthctl.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use actix::{Actor, Addr};
use futures::channel::oneshot;

use super::fake::FakeSupervisor;
use super::{ApiServer, ApiServerError, ApiSettings, ApiState, SnapshotPorts, SupervisorPorts};
use crate::images::ImageStore;

/// A running API; stopped (socket removed) on drop. `T` is what the test keeps of the
/// supervisor: by default the fake's address, to steer it (`FailNext`, `ForceState`).
pub struct TestServer<T = Addr<FakeSupervisor>> {
    /// The supervisor's handle.
    pub supervisor: T,
    /// The Unix socket.
    pub socket: PathBuf,
    /// The TCP listener, if configured.
    pub tcp: Option<SocketAddr>,
    /// The image store, if one was asked for.
    pub images: Option<ImageStore>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts the API over a new [`FakeSupervisor`] on `<dir>/hearthd.sock` with an image
    /// store under `dir`; `adjust` may change the configuration (socket, TCP, token, mode).
    pub fn start(
        dir: &Path,
        adjust: impl FnOnce(&mut ApiSettings),
    ) -> Result<TestServer, ApiServerError> {
        Self::start_with_snapshots(dir, adjust, || {
            let fake = FakeSupervisor::default().start();
            (
                SupervisorPorts::new(&fake),
                Some(SnapshotPorts::new(&fake)),
                fake,
            )
        })
    }
}

impl<T: Send + 'static> TestServer<T> {
    /// Like [`TestServer::start`], over the supervisor `make` starts (it runs inside the
    /// server's actix system) and returns with the handle the test keeps.
    pub fn start_with(
        dir: &Path,
        adjust: impl FnOnce(&mut ApiSettings),
        make: impl FnOnce() -> (SupervisorPorts, T) + Send + 'static,
    ) -> Result<TestServer<T>, ApiServerError> {
        Self::start_with_snapshots(dir, adjust, move || {
            let (ports, handle) = make();
            (ports, None, handle)
        })
    }

    /// Like [`TestServer::start_with`], also serving the snapshot endpoints through the
    /// ports `make` returns (without them they answer 503).
    pub fn start_with_snapshots(
        dir: &Path,
        adjust: impl FnOnce(&mut ApiSettings),
        make: impl FnOnce() -> (SupervisorPorts, Option<SnapshotPorts>, T) + Send + 'static,
    ) -> Result<TestServer<T>, ApiServerError> {
        let mut config = ApiSettings {
            socket: dir.join("hearthd.sock"),
            workers: 1,
            ..ApiSettings::default()
        };
        adjust(&mut config);
        let socket = config.socket.clone();
        let images = ImageStore::open(dir).ok();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let store = images.clone();
        let thread = std::thread::spawn(move || {
            let sys = actix::System::new();
            sys.block_on(async move {
                let (ports, snapshots, handle) = make();
                let mut state = ApiState::new(ports, store);
                state.snapshots = snapshots;
                match ApiServer::start(&config, state) {
                    Ok((api, server)) => {
                        actix::spawn(server);
                        let _ = ready_tx.send(Ok((handle, api.tcp_addr())));
                        let _ = stop_rx.await;
                        api.stop().await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        });
        let ready = ready_rx.recv().map_err(|_| ApiServerError::Io {
            op: "start",
            what: "the test server thread".into(),
            source: std::io::Error::other("thread ended"),
        });
        let (supervisor, tcp) = match ready.and_then(|r| r) {
            Ok(v) => v,
            Err(e) => {
                let _ = thread.join();
                return Err(e);
            }
        };
        Ok(TestServer {
            supervisor,
            socket,
            tcp,
            images,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl<T> Drop for TestServer<T> {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
