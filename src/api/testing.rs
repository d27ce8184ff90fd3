//! [`TestServer`]: the API over a [`FakeSupervisor`] on its own thread and actix system, on a
//! socket in a directory the test provides, for the integration tests of the API and of
//! hearthctl.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use actix::{Actor, Addr};
use futures::channel::oneshot;

use super::fake::FakeSupervisor;
use super::{ApiConfig, ApiServer, ApiServerError, ApiState, SupervisorPorts};
use crate::images::ImageStore;

/// A running API over a fake supervisor; stopped (socket removed) on drop.
pub struct TestServer {
    /// The fake, to steer it (`FailNext`, `ForceState`).
    pub fake: Addr<FakeSupervisor>,
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
    /// Starts the API on `<dir>/hearthd.sock` with an image store under `dir`; `adjust` may
    /// change the configuration (socket, TCP, token, mode) first.
    pub fn start(
        dir: &Path,
        adjust: impl FnOnce(&mut ApiConfig),
    ) -> Result<TestServer, ApiServerError> {
        let mut config = ApiConfig {
            socket: dir.join("hearthd.sock"),
            workers: 1,
            ..ApiConfig::default()
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
                let fake = FakeSupervisor::default().start();
                let state = ApiState::new(SupervisorPorts::new(&fake), store);
                match ApiServer::start(&config, state) {
                    Ok((api, server)) => {
                        actix::spawn(server);
                        let _ = ready_tx.send(Ok((fake, api.tcp_addr())));
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
        let (fake, tcp) = match ready.and_then(|r| r) {
            Ok(v) => v,
            Err(e) => {
                let _ = thread.join();
                return Err(e);
            }
        };
        Ok(TestServer {
            fake,
            socket,
            tcp,
            images,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
