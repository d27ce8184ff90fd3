//! The finalizer patch shared by the node agent (adds and removes) and the controller
//! (removes it from objects no node runs): a merge patch of the whole list, carrying the
//! `resourceVersion` it was computed from, so a concurrent change to the list makes the write
//! fail (409) instead of dropping someone else's finalizer.

use kube::ResourceExt;
use serde_json::{json, Value};

use crate::crd::{MicroVM, FINALIZER};

/// The merge patch that puts [`FINALIZER`] on `obj` (`add`) or takes it off, keeping the
/// others.
pub fn finalizer_patch(obj: &MicroVM, add: bool) -> Value {
    let mut list: Vec<String> = obj.finalizers().to_vec();
    list.retain(|f| f != FINALIZER);
    if add {
        list.push(FINALIZER.to_owned());
    }
    json!({"metadata": {
        "finalizers": list,
        "resourceVersion": obj.resource_version(),
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(finalizers: &[&str]) -> MicroVM {
        let spec = serde_json::from_value(json!({"kernel": "k", "rootfs": "r"})).unwrap();
        let mut m = MicroVM::new("web", spec);
        m.metadata.finalizers = Some(finalizers.iter().map(|f| (*f).to_owned()).collect());
        m.metadata.resource_version = Some("42".into());
        m
    }

    #[test]
    fn adds_once_removes_only_ours_and_pins_the_version() {
        let p = finalizer_patch(&obj(&["other/x"]), true);
        assert_eq!(p["metadata"]["finalizers"], json!(["other/x", FINALIZER]));
        assert_eq!(p["metadata"]["resourceVersion"], "42");
        let p = finalizer_patch(&obj(&[FINALIZER]), true);
        assert_eq!(p["metadata"]["finalizers"], json!([FINALIZER]));
        let p = finalizer_patch(&obj(&["other/x", FINALIZER]), false);
        assert_eq!(p["metadata"]["finalizers"], json!(["other/x"]));
    }
}
