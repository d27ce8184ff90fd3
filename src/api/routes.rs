//! The route table. Every endpoint is registered through [`Routes::add`], which also records
//! it, so the OpenAPI document can be checked against what is really served
//! ([`registered`]). Paths with several methods become one resource whose other methods
//! answer 405; unknown paths answer 404, both with the JSON error body.

use actix_web::http::Method;
use actix_web::web::{self, Data, ServiceConfig};
use actix_web::{FromRequest, Handler, HttpRequest, HttpResponse, Responder, Route};
use hearth_actors::supervisor as sup;
use hearth_proto::api_health::Health;

use super::query::Params;
use super::{
    archive, attach, events, exec, image_pull, images, metrics, openapi, snapshots, vms, ApiError,
    ApiState,
};

/// Routes being registered, grouped by path in registration order.
#[derive(Default)]
pub struct Routes {
    resources: Vec<(&'static str, Vec<(Method, Route)>)>,
}

impl Routes {
    /// Registers `handler` for `method` on `path`.
    pub fn add<F, Args>(&mut self, method: Method, path: &'static str, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        let route = web::route().method(method.clone()).to(handler);
        match self.resources.iter_mut().find(|(p, _)| *p == path) {
            Some((_, routes)) => routes.push((method, route)),
            None => self.resources.push((path, vec![(method, route)])),
        }
        self
    }

    /// Every (method, path) registered.
    pub fn table(&self) -> Vec<(Method, &'static str)> {
        self.resources
            .iter()
            .flat_map(|(path, routes)| routes.iter().map(|(m, _)| (m.clone(), *path)))
            .collect()
    }

    /// Installs the routes and the JSON 404/405 answers into `cfg`.
    pub fn install(self, cfg: &mut ServiceConfig) {
        for (path, routes) in self.resources {
            let mut resource = web::resource(path);
            let mut allow: Vec<String> = Vec::new();
            for (method, route) in routes {
                allow.push(method.to_string());
                resource = resource.route(route);
            }
            let allow = std::rc::Rc::new(allow);
            cfg.service(resource.default_service(web::to(move |req: HttpRequest| {
                let allow = allow.clone();
                async move { method_not_allowed(req, &allow) }
            })));
        }
        cfg.default_service(web::to(no_route));
    }
}

/// Every endpoint of the API.
pub fn api_routes() -> Routes {
    let mut r = Routes::default();
    r.add(Method::POST, "/v1/vms", vms::create)
        .add(Method::GET, "/v1/vms", vms::list)
        .add(Method::GET, "/v1/vms/{name}", vms::get)
        .add(Method::DELETE, "/v1/vms/{name}", vms::delete)
        .add(Method::PATCH, "/v1/vms/{name}", super::policy::update)
        .add(Method::POST, "/v1/vms/{name}/start", vms::start)
        .add(Method::POST, "/v1/vms/{name}/stop", vms::stop)
        .add(Method::POST, "/v1/vms/{name}/kill", vms::kill)
        .add(Method::POST, "/v1/vms/{name}/restart", vms::restart)
        .add(Method::POST, "/v1/vms/{name}/pause", snapshots::pause)
        .add(Method::POST, "/v1/vms/{name}/resume", snapshots::resume)
        .add(Method::POST, "/v1/vms/{name}/snapshots", snapshots::create)
        .add(Method::POST, "/v1/vms/{name}/fork", snapshots::fork)
        .add(Method::GET, "/v1/snapshots", snapshots::list)
        .add(Method::GET, "/v1/snapshots/{name}", snapshots::get)
        .add(Method::DELETE, "/v1/snapshots/{name}", snapshots::delete)
        .add(Method::PUT, "/v1/vms/{name}/nat", vms::set_nat)
        .add(Method::GET, "/v1/vms/{name}/egress", super::egress::get)
        .add(Method::PUT, "/v1/vms/{name}/egress", super::egress::put)
        .add(Method::GET, "/v1/vms/{name}/ports", super::publish::list)
        .add(
            Method::POST,
            "/v1/vms/{name}/ports",
            super::publish::publish,
        )
        .add(
            Method::DELETE,
            "/v1/vms/{name}/ports",
            super::publish::unpublish,
        )
        .add(Method::GET, "/v1/vms/{name}/wait", vms::wait)
        .add(Method::POST, "/v1/vms/{name}/exec", exec::create)
        .add(Method::GET, "/v1/vms/{name}/execs", exec::list)
        .add(Method::GET, "/v1/vms/{name}/execs/{id}", exec::get)
        .add(
            Method::POST,
            "/v1/vms/{name}/execs/{id}/signal",
            exec::signal,
        )
        .add(
            Method::GET,
            "/v1/vms/{name}/execs/{id}/attach",
            attach::attach,
        )
        .add(Method::PUT, "/v1/vms/{name}/archive", archive::put)
        .add(Method::GET, "/v1/vms/{name}/archive", archive::get)
        .add(Method::HEAD, "/v1/vms/{name}/archive", archive::stat)
        .add(Method::POST, "/v1/images", images::import)
        .add(Method::GET, "/v1/images", images::list)
        // Before `/v1/images/{name}`, which would otherwise take these paths.
        .add(Method::POST, "/v1/images/pull", image_pull::pull)
        .add(Method::POST, "/v1/images/import", image_pull::import)
        .add(Method::GET, "/v1/images/{name}", images::get)
        .add(Method::DELETE, "/v1/images/{name}", images::delete)
        .add(Method::GET, "/v1/events", events::list)
        .add(Method::GET, "/v1/events/stream", events::stream)
        .add(Method::GET, "/v1/node", super::node::get)
        .add(Method::POST, "/v1/node/cordon", super::node::cordon)
        .add(Method::POST, "/v1/node/uncordon", super::node::uncordon)
        .add(Method::POST, "/v1/node/drain", super::node::drain)
        .add(Method::GET, "/v1/health", health)
        .add(Method::GET, "/v1/openapi.json", openapi_json)
        .add(Method::GET, "/metrics", metrics::metrics);
    r
}

/// Every (method, path) the API serves.
pub fn registered() -> Vec<(Method, &'static str)> {
    api_routes().table()
}

/// Installs every endpoint into `cfg`.
pub fn configure(cfg: &mut ServiceConfig) {
    api_routes().install(cfg);
}

/// `GET /v1/health`: 200 when the supervisor answers.
pub async fn health(state: Data<ApiState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let vms = state.ports.list.send(sup::ListVms { label: None }).await?;
    let node = state.ports.node.send(sup::GetNode).await?;
    Ok(HttpResponse::Ok().json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        vms: vms.len() as u64,
        cordoned: node.cordoned,
        cordon_reason: node.reason,
    }))
}

/// `GET /v1/openapi.json`.
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(openapi::document())
}

async fn no_route(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NoRoute {
        path: req.path().to_owned(),
    })
}

/// 405 naming the methods the path has (also sent as `Allow`, RFC 9110 section 15.5.6).
fn method_not_allowed(req: HttpRequest, allow: &[String]) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        path: req.path().to_owned(),
        allow: allow.to_vec(),
    })
}
