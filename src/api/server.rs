//! The listeners: a Unix socket (mode 0660 by default, optional group), and an optional TCP
//! listener on which every request must carry `Authorization: Bearer <token>`.
//!
//! A socket file left by a dead hearthd is removed; one another process still answers on is
//! not (startup fails), nor is a path that is not a socket. The socket is removed again when
//! the server stops through [`ApiServer::stop`].

use std::any::Any;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use actix_web::body::MessageBody;
use actix_web::dev::{Extensions, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{from_fn, Next};
use actix_web::web::Data;
use actix_web::{App, HttpServer};
use sha2::{Digest, Sha256};

use super::sse::StreamShutdown;
use super::{routes, ApiError, ApiState};

/// The default socket path (overridden by `HEARTH_SOCKET` in hearthctl).
pub const DEFAULT_SOCKET: &str = "/run/hearth/hearthd.sock";

/// Where and how the API listens, resolved from the config file's `[api]` section
/// ([`crate::config::ApiConfig`]) and the environment by hearthd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSettings {
    /// The Unix socket's path.
    pub socket: PathBuf,
    /// The socket file's mode.
    pub socket_mode: u32,
    /// The socket file's group (a name or a numeric gid); `None` keeps the process's group.
    pub socket_group: Option<String>,
    /// An extra TCP listener; needs `token`.
    pub tcp: Option<SocketAddr>,
    /// The bearer token the TCP listener requires.
    pub token: Option<String>,
    /// Worker threads.
    pub workers: usize,
    /// The exec and archive endpoints' settings (`[exec]`).
    pub exec: super::exec::ExecSettings,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            socket: DEFAULT_SOCKET.into(),
            socket_mode: 0o660,
            socket_group: None,
            tcp: None,
            token: None,
            workers: 2,
            exec: super::exec::ExecSettings::default(),
        }
    }
}

/// Why the API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    /// Another process answers on the socket path.
    #[error("Another process (hearthd?) is listening on {path}")]
    SocketInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Something that is not a socket is at the socket path.
    #[error("{path} exists and is not a socket")]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// A TCP listener was asked for without a token.
    #[error("The TCP listener on {addr} needs a bearer token (api.token)")]
    NoToken {
        /// The TCP address.
        addr: SocketAddr,
    },
    /// The socket group does not exist.
    #[error("No group named {group:?}")]
    UnknownGroup {
        /// The name given.
        group: String,
    },
    /// A file or socket operation failed.
    #[error("Cannot {op} {what}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path or address.
        what: String,
        /// Why.
        source: io::Error,
    },
}

fn io_err(op: &'static str, what: impl ToString) -> impl FnOnce(io::Error) -> ApiServerError {
    let what = what.to_string();
    move |source| ApiServerError::Io { op, what, source }
}

/// Makes `path` free for a new socket: removes a stale socket nobody answers on, refuses a
/// live one or a non-socket, creates the parent directory.
pub fn clear_socket_path(path: &Path) -> Result<(), ApiServerError> {
    match path.symlink_metadata() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspect", path.display())(e)),
        Ok(md) if !md.file_type().is_socket() => {
            return Err(ApiServerError::NotASocket { path: path.into() })
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => return Err(ApiServerError::SocketInUse { path: path.into() }),
            // Nobody listens: a dead hearthd's socket.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(io_err("remove", path.display()))?;
            }
            Err(e) => return Err(io_err("probe", path.display())(e)),
        },
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_err("create", parent.display()))?;
    }
    Ok(())
}

fn resolve_group(group: &str) -> Result<nix::unistd::Gid, ApiServerError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(nix::unistd::Gid::from_raw(gid));
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid),
        _ => Err(ApiServerError::UnknownGroup {
            group: group.into(),
        }),
    }
}

/// Binds the Unix socket with its mode and group.
fn bind_socket(config: &ApiSettings) -> Result<UnixListener, ApiServerError> {
    let path = &config.socket;
    clear_socket_path(path)?;
    let gid = config
        .socket_group
        .as_deref()
        .map(resolve_group)
        .transpose()?;
    let listener = UnixListener::bind(path).map_err(io_err("bind", path.display()))?;
    let result = (|| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.socket_mode))
            .map_err(io_err("chmod", path.display()))?;
        if let Some(gid) = gid {
            nix::unistd::chown(path, None, Some(gid))
                .map_err(|e| io_err("chown", path.display())(e.into()))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(listener)
}

/// Marks connections accepted on the TCP listener.
#[derive(Debug, Clone, Copy)]
struct ViaTcp;

/// The digest of the bearer token (compared digest to digest, so the comparison does not
/// leak the token's length or a matching prefix through timing).
#[derive(Clone)]
struct TokenDigest([u8; 32]);

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lets requests on the Unix socket through; on TCP requires the bearer token.
async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if req.conn_data::<ViaTcp>().is_some() {
        let expected = req.app_data::<TokenDigest>().cloned();
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| digest(t.trim().as_bytes()));
        match (expected, given) {
            (Some(expected), Some(given)) if same(&expected.0, &given) => {}
            _ => return Err(ApiError::Unauthorized.into()),
        }
    }
    next.call(req).await
}

/// Logs every request with its status and duration (outermost, so refusals by
/// [`authenticate`] are logged too).
async fn access_log(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let log = req.app_data::<Data<ApiState>>().map(|s| s.log.clone());
    let method = req.method().clone();
    let path = req.path().to_owned();
    let via_tcp = req.conn_data::<ViaTcp>().is_some();
    let res = next.call(req).await;
    if let Some(log) = log {
        let (status, error) = match &res {
            Ok(r) => (
                r.status(),
                r.response().error().map(std::string::ToString::to_string),
            ),
            Err(e) => (e.as_response_error().status_code(), Some(e.to_string())),
        };
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let error = error.unwrap_or_default();
        let transport = if via_tcp { "tcp" } else { "unix" };
        if status.is_server_error() {
            slog::warn!(log, "request"; "method" => %method, "path" => &path,
                "status" => status.as_u16(), "ms" => ms, "via" => transport, "error" => &error);
        } else if status.is_client_error() {
            slog::info!(log, "request"; "method" => %method, "path" => &path,
                "status" => status.as_u16(), "ms" => ms, "via" => transport, "error" => &error);
        } else {
            slog::debug!(log, "request"; "method" => %method, "path" => &path,
                "status" => status.as_u16(), "ms" => ms, "via" => transport);
        }
    }
    res
}

/// A running API server.
pub struct ApiServer {
    handle: ServerHandle,
    shutdown: tokio::sync::watch::Sender<bool>,
    socket: PathBuf,
    tcp: Option<SocketAddr>,
}

impl ApiServer {
    /// Binds the listeners and starts serving `state`; the returned `Server` future must be
    /// spawned (or awaited) on the actix system. Signals are left to the caller.
    pub fn start(
        config: &ApiSettings,
        state: ApiState,
    ) -> Result<(ApiServer, actix_web::dev::Server), ApiServerError> {
        let token = match (config.tcp, &config.token) {
            (Some(addr), None) => return Err(ApiServerError::NoToken { addr }),
            (Some(addr), Some(t)) if t.trim().is_empty() => {
                return Err(ApiServerError::NoToken { addr })
            }
            (_, t) => t.as_ref().map(|t| TokenDigest(digest(t.trim().as_bytes()))),
        };
        let tcp_listener = match config.tcp {
            Some(addr) => Some(std::net::TcpListener::bind(addr).map_err(io_err("bind", addr))?),
            None => None,
        };
        let tcp = tcp_listener
            .as_ref()
            .map(std::net::TcpListener::local_addr)
            .transpose()
            .map_err(io_err("inspect", "the TCP listener"))?;
        let uds = bind_socket(config)?;
        let exec = Data::new(super::exec::ExecApi::start(
            config.exec,
            state.ports.guest.clone(),
            &state.log,
        ));
        let data = Data::new(state);
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let server = HttpServer::new(move || {
            let mut app = App::new()
                .app_data(data.clone())
                .app_data(exec.clone())
                .app_data(StreamShutdown(shutdown_rx.clone()))
                .wrap(from_fn(authenticate))
                .wrap(from_fn(access_log));
            if let Some(t) = token.clone() {
                app = app.app_data(t);
            }
            app.configure(routes::configure)
        })
        .workers(config.workers.max(1))
        .disable_signals()
        .shutdown_timeout(5)
        .on_connect(|conn: &dyn Any, ext: &mut Extensions| {
            if conn.is::<actix_web::rt::net::TcpStream>() {
                ext.insert(ViaTcp);
            }
        });
        let socket = config.socket.clone();
        let server = server
            .listen_uds(uds)
            .map_err(io_err("listen on", socket.display()));
        let mut server = match server {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&socket);
                return Err(e);
            }
        };
        if let Some(l) = tcp_listener {
            server = match server.listen(l) {
                Ok(s) => s,
                Err(e) => {
                    let _ = std::fs::remove_file(&socket);
                    return Err(io_err("listen on", "the TCP listener")(e));
                }
            };
        }
        let server = server.run();
        Ok((
            ApiServer {
                handle: server.handle(),
                shutdown,
                socket,
                tcp,
            },
            server,
        ))
    }

    /// The TCP listener's address, if there is one (useful with port 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// The Unix socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Removes the socket (so clients see at once that hearthd is gone), stops accepting,
    /// ends event streams, and lets in-flight requests finish (up to 5 s).
    pub async fn stop(self) {
        let _ = std::fs::remove_file(&self.socket);
        let stopped = self.handle.stop(true);
        let _ = self.shutdown.send(true);
        stopped.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_sockets_are_removed_live_ones_and_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/api.sock");
        clear_socket_path(&path).unwrap();
        assert!(path.parent().unwrap().is_dir());

        let live = UnixListener::bind(&path).unwrap();
        assert!(matches!(
            clear_socket_path(&path),
            Err(ApiServerError::SocketInUse { .. })
        ));
        drop(live);
        // The file stays behind when a listener dies: it is stale now.
        assert!(path.exists());
        clear_socket_path(&path).unwrap();
        assert!(!path.exists());

        std::fs::write(&path, b"not a socket").unwrap();
        assert!(matches!(
            clear_socket_path(&path),
            Err(ApiServerError::NotASocket { .. })
        ));
        assert!(path.exists());
    }

    /// Collects log lines as `LEVEL msg key=value...`.
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    struct Kv(String);

    impl slog::Serializer for Kv {
        fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments) -> slog::Result {
            self.0.push_str(&format!(" {key}={val}"));
            Ok(())
        }
    }

    impl slog::Drain for Lines {
        type Ok = ();
        type Err = slog::Never;

        fn log(&self, r: &slog::Record, kv: &slog::OwnedKVList) -> Result<(), slog::Never> {
            use slog::KV;
            let mut line = Kv(format!("{} {}", r.level().as_short_str(), r.msg()));
            let _ = r.kv().serialize(r, &mut line);
            let _ = kv.serialize(r, &mut line);
            self.0.lock().unwrap().push(line.0);
            Ok(())
        }
    }

    #[actix_web::test]
    async fn requests_are_logged_with_status_and_level() {
        use actix::Actor;
        use actix_web::test::{call_service, init_service, TestRequest};

        let lines = Lines::default();
        let fake = super::super::fake::FakeSupervisor::default().start();
        let state = ApiState::new(super::super::SupervisorPorts::new(&fake), None)
            .with_logger(slog::Logger::root(lines.clone(), slog::o!()));
        let app = init_service(
            App::new()
                .app_data(Data::new(state))
                .wrap(from_fn(authenticate))
                .wrap(from_fn(access_log))
                .configure(routes::configure),
        )
        .await;
        let ok = call_service(&app, TestRequest::get().uri("/v1/health").to_request()).await;
        assert_eq!(ok.status(), 200);
        let missing = call_service(&app, TestRequest::get().uri("/v1/vms/x").to_request()).await;
        assert_eq!(missing.status(), 404);
        let no_store = call_service(&app, TestRequest::get().uri("/v1/images").to_request()).await;
        assert_eq!(no_store.status(), 503);
        let lines = lines.0.lock().unwrap().clone();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("DEBG request") && lines[0].contains("status=200"));
        assert!(lines[1].starts_with("INFO request") && lines[1].contains("status=404"));
        assert!(lines[1].contains("error=No VM named"), "{}", lines[1]);
        assert!(lines[2].starts_with("WARN request") && lines[2].contains("status=503"));
        assert!(lines[2].contains("component=api"), "{}", lines[2]);
    }

    #[test]
    fn token_comparison() {
        assert!(same(&digest(b"abc"), &digest(b"abc")));
        assert!(!same(&digest(b"abc"), &digest(b"abd")));
    }
}
