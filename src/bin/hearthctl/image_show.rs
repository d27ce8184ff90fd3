//! `hearthctl image get NAME`: one image as aligned `Key: value` lines, with where an image
//! built from an OCI image came from and how it runs (its config).

use hearth_proto::api_images::ImageInfo;

use crate::output::{human_size, utc};

/// The lines `image get` prints for `i`.
pub(crate) fn describe(i: &ImageInfo) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("Name", i.name.clone()),
        ("Kind", format!("{} ({})", i.kind.as_str(), i.format)),
        ("Size", format!("{} ({} bytes)", human_size(i.size), i.size)),
        ("SHA256", i.sha256.clone()),
        ("Imported", utc(i.imported_unix * 1000)),
    ];
    match &i.oci {
        None => rows.push(("Source", i.source.display().to_string())),
        Some(o) => {
            let c = &o.config;
            let list = |v: &[String]| {
                if v.is_empty() {
                    "-".to_owned()
                } else {
                    serde_json::to_string(v).unwrap_or_default()
                }
            };
            rows.extend([
                ("Source", o.reference.clone()),
                ("Digest", o.manifest_digest.clone()),
                ("Init", o.init.as_str().to_owned()),
                ("Entrypoint", list(&c.entrypoint)),
                ("Cmd", list(&c.cmd)),
                (
                    "WorkingDir",
                    c.working_dir.clone().unwrap_or_else(|| "-".into()),
                ),
                ("User", c.user.clone().unwrap_or_else(|| "-".into())),
                ("ExposedPorts", or_dash(c.exposed_ports.join(" "))),
            ]);
            rows.extend(many("Env", c.env.iter().cloned()));
            rows.extend(many(
                "Labels",
                c.labels.iter().map(|(k, v)| format!("{k}={v}")),
            ));
        }
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    rows.iter()
        .map(|(k, v)| {
            let key = if k.is_empty() {
                String::new()
            } else {
                format!("{k}:")
            };
            format!("{key:<width$} {v}\n")
        })
        .collect()
}

fn or_dash(s: String) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// One row per item, the key on the first only; `-` when there are none.
fn many(key: &'static str, items: impl Iterator<Item = String>) -> Vec<(&'static str, String)> {
    let mut rows: Vec<(&str, String)> = items
        .enumerate()
        .map(|(n, v)| (if n == 0 { key } else { "" }, v))
        .collect();
    if rows.is_empty() {
        rows.push((key, "-".into()));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_proto::api_images::{ImageFormat, ImageKind};
    use hearth_proto::image_config::{ImageConfig, InitMode, OciSource};

    #[test]
    fn shows_the_oci_source_and_config() {
        let mut i = ImageInfo {
            name: "web".into(),
            kind: ImageKind::Rootfs,
            format: ImageFormat::Ext4,
            size: 1 << 20,
            sha256: "ab".into(),
            source: "docker.io/library/nginx:1".into(),
            imported_unix: 0,
            oci: Some(Box::new(OciSource {
                reference: "docker.io/library/nginx:1".into(),
                manifest_digest: "sha256:cd".into(),
                config: ImageConfig {
                    entrypoint: vec!["/docker-entrypoint.sh".into()],
                    cmd: vec!["nginx".into(), "-g".into(), "daemon off;".into()],
                    env: vec!["PATH=/bin".into(), "NGINX=1".into()],
                    exposed_ports: vec!["80/tcp".into()],
                    labels: [("maintainer".to_owned(), "x".to_owned())].into(),
                    ..ImageConfig::default()
                },
                init: InitMode::Hearth,
                build_key: None,
            })),
        };
        let text = describe(&i);
        for want in [
            "Kind:         rootfs (ext4)\n",
            "Source:       docker.io/library/nginx:1\n",
            "Digest:       sha256:cd\n",
            "Init:         hearth\n",
            "Cmd:          [\"nginx\",\"-g\",\"daemon off;\"]\n",
            "Env:          PATH=/bin\n              NGINX=1\n",
            "ExposedPorts: 80/tcp\n",
            "Labels:       maintainer=x\n",
            "User:         -\n",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        i.oci = None;
        let text = describe(&i);
        assert!(
            text.contains("Source:   docker.io/library/nginx:1\n"),
            "{text}"
        );
        assert!(!text.contains("Cmd"), "{text}");
    }
}
