//! Reading `nft -j list ...` output: the named sets or maps of a listing with their elements,
//! and the parts of a concatenated element. What cannot be read is left out: the listed
//! tables are hearth's own.

use serde_json::Value;

/// The sets (`kind` `"set"`) or maps (`"map"`) of a listing, by name, with their elements.
#[must_use]
pub fn elements(json: &str, kind: &str) -> Vec<(String, Vec<Value>)> {
    let Ok(listing) = serde_json::from_str::<Value>(json) else {
        return Vec::new();
    };
    let Some(items) = listing.get("nftables").and_then(Value::as_array) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let object = item.get(kind)?;
            let name = object.get("name")?.as_str()?.to_owned();
            let elems = object
                .get("elem")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            Some((name, elems))
        })
        .collect()
}

/// The parts of a concatenated element or map key/data (bare, or under `elem.val`).
#[must_use]
pub fn concat(elem: &Value) -> Option<&Vec<Value>> {
    let val = elem.get("elem").and_then(|e| e.get("val")).unwrap_or(elem);
    val.get("concat")?.as_array()
}
