//! Against a real cluster, when `KUBECONFIG` names one (prints a SKIP line otherwise): the
//! CRD is applied (server-side apply, so the API server checks the schema is structural), a
//! MicroVM is made in a fresh namespace, a controller pass gives it a placeholder Pod with
//! the right requests, and, when some node carries `hearth.dev/node=true`, the scheduler's
//! binding shows in the MicroVM's status. The namespace is deleted at the end. The CRD is
//! left installed (other MicroVMs may use it). The node agent is not run: it needs hearthd
//! on the bound node.

use std::time::Duration;

use hearth_operator::controller::Controller;
use hearth_operator::crd::{crd, MicroVM, MicroVmSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};

#[tokio::test]
async fn controller_against_a_real_cluster() {
    if std::env::var_os("KUBECONFIG").is_none_or(|v| v.is_empty()) {
        hearth_testkit::skip!(
            "SKIP controller_against_a_real_cluster: KUBECONFIG does not name a cluster"
        );
        return;
    }
    let client = kube::Client::try_default()
        .await
        .expect("KUBECONFIG names a reachable cluster");
    install_crd(&client).await;

    let ns_name = format!("hearth-e2e-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some(ns_name.clone());
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();

    let (client2, ns2) = (client.clone(), ns_name.clone());
    let result = async move {
        let (client, ns_name) = (client2, ns2);
        let mvms: Api<MicroVM> = Api::namespaced(client.clone(), &ns_name);
        let spec: MicroVmSpec = serde_json::from_value(
            serde_json::json!({"kernel": "vmlinux", "rootfs": "base", "vcpus": 1, "memoryMib": 64}),
        )
        .unwrap();
        let created = mvms
            .create(&PostParams::default(), &MicroVM::new("e2e", spec))
            .await
            .unwrap();
        // The API server applies the schema's defaults.
        assert!(created.spec.running);
        // And refuses what the schema refuses: 0 vCPUs.
        let bad: MicroVmSpec =
            serde_json::from_value(serde_json::json!({"kernel": "k", "rootfs": "r", "vcpus": 0}))
                .unwrap();
        assert!(mvms
            .create(&PostParams::default(), &MicroVM::new("bad", bad))
            .await
            .is_err());

        let controller = Controller::new(
            client.clone(),
            64,
            slog::Logger::root(slog::Discard, slog::o!()),
        );
        let report = controller.reconcile_once().await.unwrap();
        assert!(
            report.created.contains(&format!("{ns_name}/e2e")),
            "{report:?}"
        );
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns_name);
        let pod = pods
            .get(&format!("microvm-{}", created.uid().unwrap()))
            .await
            .unwrap();
        let req = pod.spec.unwrap().containers[0]
            .resources
            .clone()
            .unwrap()
            .requests
            .unwrap();
        assert_eq!(req["memory"].0, "128Mi");

        // With hearth nodes, the scheduler binds the placeholder and the status shows it.
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
        let hearth_nodes = nodes
            .list(&kube::api::ListParams::default().labels("hearth.dev/node=true"))
            .await
            .unwrap();
        if hearth_nodes.items.is_empty() {
            hearth_testkit::skip!("SKIP part of controller_against_a_real_cluster: no node labelled hearth.dev/node=true");
            return;
        }
        let mut node = None;
        for _ in 0..60 {
            controller.reconcile_once().await.unwrap();
            node = mvms.get("e2e").await.unwrap().status.and_then(|s| s.node);
            if node.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(node.is_some(), "the placeholder was never bound");
    };
    // Clean up whatever happened (a panic in `result` is resumed after).
    let outcome = tokio::spawn(result).await;
    let _ = namespaces.delete(&ns_name, &DeleteParams::default()).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Applies the CRD (server-side) and waits until it is established.
async fn install_crd(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "microvms.hearth.dev",
        &PatchParams::apply("hearth-operator-e2e").force(),
        &Patch::Apply(crd()),
    )
    .await
    .expect("the API server accepts the CRD");
    // Established before use.
    let mut established = false;
    for _ in 0..60 {
        let c = crds.get("microvms.hearth.dev").await.unwrap();
        established = c.status.and_then(|s| s.conditions).is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
        if established {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(established, "CRD not established");
}
