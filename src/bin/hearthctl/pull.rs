//! `hearthctl image pull` and `hearthctl image import --kind oci`: OCI images built into root
//! filesystems by hearthd, its NDJSON progress drawn as one bar per layer (bytes and rate, on
//! stderr when it is a terminal), or with `--json` passed through line by line.

use std::collections::HashMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use hearth::client::{ApiPath, BoundedLines, Client, ClientError, Method};
use hearth_proto::api_images::{ImageInfo, NDJSON};
use hearth_proto::api_pull::{ImportArchive, PullImage, PullUpdate};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::human_size;
use crate::{usage, Failure, Out};

/// `--size`: bytes, or with a binary unit (`512MiB`, `2GiB`, `2G`).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 2GiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        other => return Err(format!("unknown unit {other:?} (KiB, MiB, GiB, TiB)")),
    };
    n.checked_mul(1 << shift)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

/// `hearthctl image pull REF --name N ...`.
pub(crate) fn pull(c: &Client, json: bool, request: &PullImage) -> Out {
    let body = serde_json::to_vec(request).map_err(ClientError::from)?;
    let img = run(c, "/v1/images/pull", &body, json)?;
    if !json {
        println!(
            "Pulled {} as {} ({}, ext4)",
            request.reference,
            img.name,
            human_size(img.size)
        );
    }
    Ok(())
}

/// `hearthctl image import N PATH --kind oci [--tag T] ...`.
pub(crate) fn import(c: &Client, json: bool, request: &ImportArchive) -> Out {
    let body = serde_json::to_vec(request).map_err(ClientError::from)?;
    let img = run(c, "/v1/images/import", &body, json)?;
    if !json {
        println!(
            "Imported {} as {} ({}, ext4)",
            request.path.display(),
            img.name,
            human_size(img.size)
        );
    }
    Ok(())
}

/// Posts `body` to `path` and follows the NDJSON answer to its image or error.
fn run(c: &Client, path: &'static str, body: &[u8], json: bool) -> Result<ImageInfo, Failure> {
    let resp = c.stream(
        Method::POST,
        ApiPath::new(path),
        &[("Accept", NDJSON)],
        Some(body),
    )?;
    if resp.status != 200 {
        // Refused before any work (bad name, reference, taken name...).
        resp.into_response()?.ok()?;
        return Err(usage(format!("Unexpected answer from {path}")));
    }
    let mut bars = Bars::new();
    let mut result = None;
    for line in BoundedLines::new(resp.body) {
        let line = line.map_err(ClientError::Io)?;
        if line.trim().is_empty() {
            continue;
        }
        if json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", line.trim_end());
            let _ = out.flush();
        }
        let update: PullUpdate = serde_json::from_str(&line).map_err(ClientError::Decode)?;
        match update {
            PullUpdate::Image(img) => result = Some(Ok(*img)),
            PullUpdate::Error(e) => result = Some(Err(e)),
            other if !json => bars.show(&other),
            _ => {}
        }
    }
    bars.clear();
    match result {
        Some(Ok(img)) => Ok(img),
        Some(Err(e)) => Err(Failure {
            code: 1,
            message: format!("{} ({})", e.message, e.code),
        }),
        None => Err(Failure {
            code: 4,
            message: "The stream ended without a result (hearthd stopped?)".into(),
        }),
    }
}

/// One bar per layer being downloaded (or for the archive being read), a spinner while
/// building; drawn on stderr, hidden when it is not a terminal.
struct Bars {
    multi: MultiProgress,
    layers: HashMap<String, ProgressBar>,
    building: Option<ProgressBar>,
    started: Instant,
}

impl Bars {
    fn new() -> Self {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            layers: HashMap::new(),
            building: None,
            started: Instant::now(),
        }
    }

    fn bytes_bar(&self, label: String, total: u64) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(total));
        let style = ProgressStyle::with_template(
            "{prefix:>14} [{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(label);
        bar
    }

    fn show(&mut self, update: &PullUpdate) {
        match update {
            PullUpdate::Resolved { layers, .. } => {
                for l in layers {
                    let label = short(&l.digest);
                    if l.cached {
                        let _ = self.multi.println(format!("{label:>14} cached"));
                    } else {
                        let bar = self.bytes_bar(label, l.size);
                        self.layers.insert(l.digest.clone(), bar);
                    }
                }
            }
            PullUpdate::Layer { digest, done, .. } => {
                if let Some(bar) = self.layers.get(digest) {
                    bar.set_position(*done);
                }
            }
            PullUpdate::Reading { done, total } => {
                let key = "archive".to_owned();
                if !self.layers.contains_key(&key) {
                    let bar = self.bytes_bar("archive".into(), *total);
                    self.layers.insert(key.clone(), bar);
                }
                if let Some(bar) = self.layers.get(&key) {
                    bar.set_position(*done);
                }
            }
            PullUpdate::Building => {
                for bar in self.layers.values() {
                    bar.finish();
                }
                let spin = self.multi.add(ProgressBar::new_spinner());
                spin.set_message(format!(
                    "building the root filesystem ({:.1}s so far)",
                    self.started.elapsed().as_secs_f64()
                ));
                spin.enable_steady_tick(Duration::from_millis(120));
                self.building = Some(spin);
            }
            PullUpdate::Image(_) | PullUpdate::Error(_) => {}
        }
    }

    fn clear(&mut self) {
        if let Some(spin) = self.building.take() {
            spin.finish_and_clear();
        }
        for bar in self.layers.values() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

/// `sha256:0123456789ab...` -> `0123456789ab`.
fn short(digest: &str) -> String {
    digest
        .strip_prefix("sha256:")
        .unwrap_or(digest)
        .chars()
        .take(12)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("2PB").is_err());
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }
}
