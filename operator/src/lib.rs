//! hearth-operator: MicroVMs as Kubernetes objects. The controller ([`controller`]) gives
//! each MicroVM a placeholder Pod ([`placement`]) that kube-scheduler places; the node agent
//! ([`node`]) runs the MicroVMs bound to its node through that node's hearthd ([`hearthd`]),
//! deciding with the pure [`plan::plan`].
#![warn(missing_docs)]

pub mod controller;
pub mod crd;
pub mod finalizer;
pub mod hearthd;
pub mod node;
pub mod placement;
pub mod plan;
pub mod trigger;
