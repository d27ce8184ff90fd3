//! The controller's and the node agent's passes against kube's mock service (tower-test):
//! each test scripts the API server's answers (`fixtures/`) and checks every request the pass
//! makes, in order: method, path, query and body.

mod common;

use std::time::Duration;

use hearth_operator::controller::Controller;
use hearth_operator::crd::FINALIZER;
use hearth_operator::hearthd::Hearthd;
use hearth_operator::node::NodeAgent;
use hearth_operator::plan::{vm_name, Action};
use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{json, Value};
use tower_test::mock::{self, Handle};

const WEB_UID: &str = "7d1c8f0e-2a4b-4c6d-8e9f-0a1b2c3d4e5f";

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).expect(name)
}

/// One expected request and the answer to give.
struct Step {
    method: Method,
    path: &'static str,
    /// Substrings the (percent-decoded) query must contain.
    query: &'static [&'static str],
    status: u16,
    answer: Value,
}

fn step(
    method: Method,
    path: &'static str,
    query: &'static [&'static str],
    status: u16,
    answer: Value,
) -> Step {
    Step {
        method,
        path,
        query,
        status,
        answer,
    }
}

/// A request's body as the mock server saw it (`Null` when empty).
#[derive(Debug)]
struct Seen {
    body: Value,
}

/// Percent-decodes a query string.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = s
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// Serves `steps` in order and returns what was asked, then checks that nothing more is
/// asked until the client is dropped.
async fn serve(mut handle: Handle<Request<Body>, Response<Body>>, steps: Vec<Step>) -> Vec<Seen> {
    let mut seen = Vec::new();
    for s in steps {
        let (req, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
            .await
            .unwrap_or_else(|_| panic!("no request came; expected {} {}", s.method, s.path))
            .expect("the client went away");
        let (parts, body) = req.into_parts();
        assert_eq!(
            (&parts.method, parts.uri.path()),
            (&s.method, s.path),
            "{}",
            parts.uri
        );
        let query = decode(parts.uri.query().unwrap_or_default());
        for q in s.query {
            assert!(query.contains(q), "{} lacks {q}", parts.uri);
        }
        let bytes = body.collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        seen.push(Seen { body });
        let answer = Response::builder()
            .status(s.status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&s.answer).unwrap()))
            .unwrap();
        send.send_response(answer);
    }
    if let Some((req, _)) = handle.next_request().await {
        panic!("unexpected request {} {}", req.method(), req.uri());
    }
    seen
}

fn client() -> (kube::Client, Handle<Request<Body>, Response<Body>>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

fn log() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

fn microvm(list: &Value, name: &str) -> Value {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metadata"]["name"] == name)
        .unwrap()
        .clone()
}

fn status_answer(list: &Value, name: &str) -> Value {
    microvm(list, name)
}

#[tokio::test]
async fn controller_creates_placeholders_and_reports_binding() {
    let (client, handle) = client();
    let mvms = fixture("microvms.json");
    let server = tokio::spawn(serve(
        handle,
        vec![
            step(
                Method::GET,
                "/api/v1/pods",
                &["labelSelector=hearth.dev/microvm-uid"],
                200,
                fixture("all-placeholder-pods.json"),
            ),
            step(
                Method::GET,
                "/apis/hearth.dev/v1alpha1/microvms",
                &[],
                200,
                mvms.clone(),
            ),
            // web: its placeholder is bound to n1 -> the status says so.
            step(
                Method::PATCH,
                "/apis/hearth.dev/v1alpha1/namespaces/default/microvms/web/status",
                &[],
                200,
                status_answer(&mvms, "web"),
            ),
            // db: no placeholder yet -> one is created in its namespace; its Pending status
            // already says so, so it is not written again.
            step(
                Method::POST,
                "/api/v1/namespaces/team-b/pods",
                &[],
                201,
                json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "x", "namespace": "team-b"}}),
            ),
        ],
    ));
    let report = Controller::new(client, 64, log())
        .reconcile_once()
        .await
        .unwrap();
    let seen = server.await.unwrap();
    assert_eq!(report.created, ["team-b/db"]);
    assert_eq!(report.status_updates, ["default/web"]);
    assert!(report.failed.is_empty(), "{:?}", report.failed);

    let status = &seen[2].body["status"];
    assert_eq!(status["phase"], "Scheduled");
    assert_eq!(status["node"], "n1");
    assert_eq!(status["conditions"][0]["type"], "Scheduled");
    assert_eq!(status["conditions"][0]["status"], "True");
    // Unset fields are sent as null, so a merge patch clears stale values.
    assert_eq!(status["guestIp"], Value::Null);
    assert!(status.as_object().unwrap().contains_key("guestIp"));

    let pod = &seen[3].body;
    assert_eq!(
        pod["metadata"]["name"],
        "microvm-11111111-2222-4333-8444-555555555555"
    );
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "MicroVM");
    let req = &pod["spec"]["containers"][0]["resources"]["requests"];
    assert_eq!(
        (req["cpu"].as_str(), req["memory"].as_str()),
        (Some("2"), Some("1088Mi"))
    );
    assert_eq!(pod["spec"]["nodeSelector"]["hearth.dev/node"], "true");
}

#[tokio::test]
async fn controller_reports_api_errors_per_object_and_goes_on() {
    let (client, handle) = client();
    let mvms = fixture("microvms.json");
    let server = tokio::spawn(serve(
        handle,
        vec![
            step(
                Method::GET,
                "/api/v1/pods",
                &[],
                200,
                fixture("all-placeholder-pods.json"),
            ),
            step(
                Method::GET,
                "/apis/hearth.dev/v1alpha1/microvms",
                &[],
                200,
                mvms,
            ),
            step(
                Method::PATCH,
                "/apis/hearth.dev/v1alpha1/namespaces/default/microvms/web/status",
                &[],
                500,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "etcd is down", "reason": "InternalError", "code": 500}),
            ),
            step(
                Method::POST,
                "/api/v1/namespaces/team-b/pods",
                &[],
                403,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "pods is forbidden", "reason": "Forbidden", "code": 403}),
            ),
        ],
    ));
    let report = Controller::new(client, 64, log())
        .reconcile_once()
        .await
        .unwrap();
    server.await.unwrap();
    assert!(report.created.is_empty() && report.status_updates.is_empty());
    assert_eq!(report.failed.len(), 2, "{:?}", report.failed);
    assert!(
        report.failed[0].contains("etcd is down"),
        "{:?}",
        report.failed
    );
    assert!(
        report.failed[1].contains("forbidden"),
        "{:?}",
        report.failed
    );
}

#[tokio::test]
async fn node_agent_with_hearthd_down_only_reports_it() {
    let (client, handle) = client();
    let mvms = fixture("microvms.json");
    let dir = tempfile::tempdir().unwrap();
    let hearthd = Hearthd::new(dir.path().join("hearthd.sock"));
    let server = tokio::spawn(serve(
        handle,
        vec![
            step(
                Method::GET,
                "/api/v1/pods",
                &[
                    "fieldSelector=spec.nodeName=n1",
                    "labelSelector=hearth.dev/microvm-uid",
                ],
                200,
                fixture("placeholder-pods-n1.json"),
            ),
            step(
                Method::GET,
                "/apis/hearth.dev/v1alpha1/microvms",
                &[],
                200,
                mvms.clone(),
            ),
            step(
                Method::PATCH,
                "/apis/hearth.dev/v1alpha1/namespaces/default/microvms/web/status",
                &[],
                200,
                status_answer(&mvms, "web"),
            ),
        ],
    ));
    let mut agent = NodeAgent::new(client, hearthd, "n1".into(), log());
    let report = agent.reconcile_once().await.unwrap();
    drop(agent);
    let seen = server.await.unwrap();
    // Only web is bound here; db is not this node's.
    assert_eq!(report.planned.len(), 1, "{:?}", report.planned);
    let status = &seen[2].body["status"];
    assert_eq!(status["phase"], "Unknown");
    assert_eq!(status["conditions"][1]["reason"], "HearthdUnreachable");
    assert!(status["conditions"][1]["message"]
        .as_str()
        .unwrap()
        .contains("hearthd is not running"));
    assert_eq!(seen.len(), 3);
}

/// A full agent pass: kube mocked, hearthd real. The finalizer goes on (read, then written
/// with the resourceVersion read), then the VM is created on hearthd, then the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_agent_pass_creates_the_vm_after_the_finalizer() {
    if !hearth_testkit::privileged("node_agent_pass_creates_the_vm_after_the_finalizer") {
        return;
    }
    let host = common::Host::start();
    let (client, handle) = client();
    let mvms = fixture("microvms.json");
    let mut with_finalizer = microvm(&mvms, "web");
    with_finalizer["metadata"]["finalizers"] = json!([FINALIZER]);
    let server = tokio::spawn(serve(
        handle,
        vec![
            step(
                Method::GET,
                "/api/v1/pods",
                &["fieldSelector=spec.nodeName=n1"],
                200,
                fixture("placeholder-pods-n1.json"),
            ),
            step(
                Method::GET,
                "/apis/hearth.dev/v1alpha1/microvms",
                &[],
                200,
                mvms.clone(),
            ),
            step(
                Method::GET,
                "/apis/hearth.dev/v1alpha1/namespaces/default/microvms/web",
                &[],
                200,
                microvm(&mvms, "web"),
            ),
            step(
                Method::PATCH,
                "/apis/hearth.dev/v1alpha1/namespaces/default/microvms/web",
                &[],
                200,
                with_finalizer,
            ),
            step(
                Method::PATCH,
                "/apis/hearth.dev/v1alpha1/namespaces/default/microvms/web/status",
                &[],
                200,
                microvm(&mvms, "web"),
            ),
        ],
    ));
    let mut agent = NodeAgent::new(client, Hearthd::new(host.socket()), "n1".into(), log());
    let report = agent.reconcile_once().await.unwrap();
    drop(agent);
    let seen = server.await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(
        matches!(report.planned[0], Action::AddFinalizer(_)),
        "{:?}",
        report.planned
    );
    assert_eq!(seen[3].body["metadata"]["finalizers"], json!([FINALIZER]));
    assert_eq!(seen[3].body["metadata"]["resourceVersion"], "4690");
    assert_eq!(seen[4].body["status"]["phase"], "Creating");
    let vms = Hearthd::new(host.socket()).list().await.unwrap();
    assert_eq!(vms.len(), 1, "{}", host.log());
    assert_eq!(vms[0].name, vm_name(WEB_UID));
}

/// When the finalizer cannot be put on (a concurrent change: 409), no VM is made: a VM
/// without a finalizer could outlive its object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_agent_makes_no_vm_when_the_finalizer_fails() {
    if !hearth_testkit::privileged("node_agent_makes_no_vm_when_the_finalizer_fails") {
        return;
    }
    let host = common::Host::start();
    let (client, handle) = client();
    let mvms = fixture("microvms.json");
    let server = tokio::spawn(serve(
        handle,
        vec![
            step(
                Method::GET,
                "/api/v1/pods",
                &[],
                200,
                fixture("placeholder-pods-n1.json"),
            ),
            step(
                Method::GET,
                "/apis/hearth.dev/v1alpha1/microvms",
                &[],
                200,
                mvms.clone(),
            ),
            step(
                Method::GET,
                "/apis/hearth.dev/v1alpha1/namespaces/default/microvms/web",
                &[],
                200,
                microvm(&mvms, "web"),
            ),
            step(
                Method::PATCH,
                "/apis/hearth.dev/v1alpha1/namespaces/default/microvms/web",
                &[],
                409,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
                       "message": "Operation cannot be fulfilled on microvms.hearth.dev \"web\": the object has been modified"}),
            ),
            // The status is still written; the create is not attempted.
            step(
                Method::PATCH,
                "/apis/hearth.dev/v1alpha1/namespaces/default/microvms/web/status",
                &[],
                200,
                microvm(&mvms, "web"),
            ),
        ],
    ));
    let mut agent = NodeAgent::new(client, Hearthd::new(host.socket()), "n1".into(), log());
    let report = agent.reconcile_once().await.unwrap();
    drop(agent);
    server.await.unwrap();
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert!(Hearthd::new(host.socket()).list().await.unwrap().is_empty());
}

/// A MicroVM deleted while no node holds it (unplaced, no node in its status): the controller
/// takes the node finalizer off, since no agent would; it creates no placeholder for it.
#[tokio::test]
async fn controller_releases_a_deleted_unplaced_microvm() {
    let (client, handle) = client();
    let mut mvms = fixture("microvms.json");
    let db = &mut mvms["items"][1];
    db["metadata"]["deletionTimestamp"] = json!("2026-11-30T04:30:00Z");
    db["metadata"]["finalizers"] = json!(["example.com/keep", FINALIZER]);
    let server = tokio::spawn(serve(
        handle,
        vec![
            step(
                Method::GET,
                "/api/v1/pods",
                &[],
                200,
                fixture("all-placeholder-pods.json"),
            ),
            step(
                Method::GET,
                "/apis/hearth.dev/v1alpha1/microvms",
                &[],
                200,
                mvms.clone(),
            ),
            step(
                Method::PATCH,
                "/apis/hearth.dev/v1alpha1/namespaces/default/microvms/web/status",
                &[],
                200,
                microvm(&mvms, "web"),
            ),
            step(
                Method::PATCH,
                "/apis/hearth.dev/v1alpha1/namespaces/team-b/microvms/db",
                &[],
                200,
                microvm(&mvms, "db"),
            ),
        ],
    ));
    let report = Controller::new(client, 64, log())
        .reconcile_once()
        .await
        .unwrap();
    let seen = server.await.unwrap();
    assert_eq!(report.released, ["team-b/db"]);
    assert!(report.created.is_empty(), "{report:?}");
    assert_eq!(
        seen[3].body["metadata"]["finalizers"],
        json!(["example.com/keep"])
    );
    assert_eq!(seen[3].body["metadata"]["resourceVersion"], "4691");
}

/// hearthd refuses the create (an image this node does not have): the refusal, with
/// hearthd's reason, goes into `status.lastError`; once stored, it is not written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_agent_reports_hearthds_refusal_in_the_status() {
    if !hearth_testkit::privileged("node_agent_reports_hearthds_refusal_in_the_status") {
        return;
    }
    let host = common::Host::start();
    let mut mvms = fixture("microvms.json");
    mvms["items"][0]["metadata"]["finalizers"] = json!([FINALIZER]);
    mvms["items"][0]["spec"]["rootfs"] = json!("not-imported");
    let web = microvm(&mvms, "web");
    let (kube, handle) = client();
    let server = tokio::spawn(serve(
        handle,
        vec![
            step(
                Method::GET,
                "/api/v1/pods",
                &[],
                200,
                fixture("placeholder-pods-n1.json"),
            ),
            step(
                Method::GET,
                "/apis/hearth.dev/v1alpha1/microvms",
                &[],
                200,
                mvms.clone(),
            ),
            step(
                Method::PATCH,
                "/apis/hearth.dev/v1alpha1/namespaces/default/microvms/web/status",
                &[],
                200,
                web.clone(),
            ),
            step(
                Method::PATCH,
                "/apis/hearth.dev/v1alpha1/namespaces/default/microvms/web/status",
                &[],
                200,
                web.clone(),
            ),
        ],
    ));
    let mut agent = NodeAgent::new(kube, Hearthd::new(host.socket()), "n1".into(), log());
    let report = agent.reconcile_once().await.unwrap();
    drop(agent);
    let seen = server.await.unwrap();
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert_eq!(seen[2].body["status"]["phase"], "Creating");
    let error = seen[3].body["status"]["lastError"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("not-imported"), "{error}");
    assert!(Hearthd::new(host.socket()).list().await.unwrap().is_empty());

    // Next pass, with both patches stored: the create is tried again, no status is written.
    mvms["items"][0]["status"] = seen[2].body["status"].clone();
    mvms["items"][0]["status"]["lastError"] = json!(error);
    let (kube, handle) = client();
    let server = tokio::spawn(serve(
        handle,
        vec![
            step(
                Method::GET,
                "/api/v1/pods",
                &[],
                200,
                fixture("placeholder-pods-n1.json"),
            ),
            step(
                Method::GET,
                "/apis/hearth.dev/v1alpha1/microvms",
                &[],
                200,
                mvms.clone(),
            ),
        ],
    ));
    let mut agent = NodeAgent::new(kube, Hearthd::new(host.socket()), "n1".into(), log());
    let report = agent.reconcile_once().await.unwrap();
    drop(agent);
    server.await.unwrap();
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
}
