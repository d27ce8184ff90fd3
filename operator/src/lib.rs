//! hearth-operator: MicroVMs as Kubernetes objects. The controller ([`controller`]) gives
//! each MicroVM a placeholder Pod that kube-scheduler places; the node agent ([`node`]) runs
//! the MicroVMs bound to its node through that node's hearthd ([`hearthd`]), deciding with
//! the pure [`plan::plan`].
#![warn(missing_docs)]

pub mod crd;
pub mod plan;
