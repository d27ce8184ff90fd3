//! `hearthctl image ...`: kernels and root filesystems in hearthd's image store.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Subcommand;
use hearth::client::{ApiPath, BoundedLines, Client, ClientError, Method};
use hearth_proto::api_images::{ImageInfo, ImageKind, ImportImage, ImportUpdate, NDJSON};
use hearth_proto::api_pull::{ArchiveKind, ImportArchive, PullImage};
use hearth_proto::image_config::InitMode;

use crate::output::{bar, human_size, print_json, table, utc};
use crate::{usage, Failure, Out};

/// The `image` subcommands; each has one function below.
#[derive(Debug, Subcommand)]
pub(crate) enum ImageCmd {
    /// Import a file on hearthd's host into the image store (hearthd copies it); with
    /// `--kind oci`, build a root filesystem from a docker-save / OCI archive or OCI layout.
    Import {
        /// The image's name.
        name: String,
        /// The file (made absolute here; hearthd reads it).
        path: PathBuf,
        /// What the image is: kernel, rootfs, or oci (an archive to build a rootfs from).
        #[arg(long, value_parser = ["kernel", "rootfs", "oci"])]
        kind: String,
        /// With `--kind oci`: which image of several in the archive (tag or repo:tag).
        #[arg(long)]
        tag: Option<String>,
        #[command(flatten)]
        build: BuildArgs,
    },
    /// Pull an image from an OCI registry and build a root filesystem image from it.
    Pull {
        /// The reference, e.g. `alpine:3.20` or `ghcr.io/org/app@sha256:...`.
        reference: String,
        /// The image's name in the store.
        #[arg(long)]
        name: String,
        /// Plain HTTP to this reference's registry (a local registry).
        #[arg(long)]
        insecure: bool,
        #[command(flatten)]
        build: BuildArgs,
    },
    /// List images.
    #[command(alias = "ls")]
    List,
    /// Show one image: kind, size, digest, and for an OCI image its source and config.
    #[command(alias = "show")]
    Get {
        /// The image.
        name: String,
    },
    /// Remove an image no VM uses.
    #[command(alias = "remove")]
    Rm {
        /// The image.
        name: String,
    },
}

/// How an OCI image's root filesystem is built.
#[derive(Debug, clap::Args)]
pub(crate) struct BuildArgs {
    /// The filesystem's size (e.g. 2GiB); default: content plus headroom.
    #[arg(long, value_parser = crate::pull::parse_size)]
    size: Option<u64>,
    /// os/arch[/variant] to choose from a multi-platform image (default linux/amd64).
    #[arg(long)]
    platform: Option<String>,
    /// hearth (the agent is init and runs the image's command) or image (its own init).
    #[arg(long, default_value = "hearth")]
    init: InitMode,
}

/// Runs one `image` subcommand.
pub(crate) fn run(c: &Client, json: bool, cmd: ImageCmd) -> Out {
    match cmd {
        ImageCmd::Import {
            name,
            path,
            kind,
            tag,
            build,
        } => {
            if kind == "oci" {
                let path = absolute(&path)?;
                let BuildArgs {
                    size,
                    platform,
                    init,
                } = build;
                return crate::pull::import(
                    c,
                    json,
                    &ImportArchive {
                        name,
                        kind: ArchiveKind::Oci,
                        path,
                        tag,
                        size,
                        platform,
                        init,
                    },
                );
            }
            let kind = kind.parse::<ImageKind>().map_err(usage)?;
            import(c, json, name, &path, kind)
        }
        ImageCmd::Pull {
            reference,
            name,
            insecure,
            build,
        } => crate::pull::pull(
            c,
            json,
            &PullImage {
                reference,
                name,
                size: build.size,
                platform: build.platform,
                insecure,
                init: build.init,
            },
        ),
        ImageCmd::List => list(c, json),
        ImageCmd::Get { name } => {
            let img: ImageInfo = c.get(ApiPath::new("/v1/images").segment(&name))?;
            if json {
                print_json(&img);
            } else {
                print!("{}", crate::image_show::describe(&img));
            }
            Ok(())
        }
        ImageCmd::Rm { name } => remove(c, json, &name),
    }
}

/// `hearthctl image import NAME PATH --kind KIND`.
fn import(c: &Client, json: bool, name: String, path: &Path, kind: ImageKind) -> Out {
    let path = absolute(path)?;
    let started = Instant::now();
    let img = import_streamed(c, &ImportImage { name, kind, path })?;
    if json {
        print_json(&img);
    } else {
        println!(
            "Imported {} ({} {}, {}) in {:.1}s\nsha256 {}",
            img.name,
            img.kind.as_str(),
            img.format,
            human_size(img.size),
            started.elapsed().as_secs_f64(),
            img.sha256
        );
    }
    Ok(())
}

/// `hearthctl image list`.
fn list(c: &Client, json: bool) -> Out {
    let list: Vec<ImageInfo> = c.get(ApiPath::new("/v1/images"))?;
    if json {
        print_json(&list);
        return Ok(());
    }
    table(
        &["NAME", "KIND", "FORMAT", "SIZE", "SHA256", "IMPORTED"],
        list.iter()
            .map(|i| {
                vec![
                    i.name.clone(),
                    i.kind.as_str().into(),
                    i.format.to_string(),
                    human_size(i.size),
                    i.sha256.chars().take(12).collect(),
                    utc(i.imported_unix * 1000),
                ]
            })
            .collect(),
    );
    Ok(())
}

/// `hearthctl image rm NAME`.
fn remove(c: &Client, json: bool, name: &str) -> Out {
    c.request(
        Method::DELETE,
        ApiPath::new("/v1/images").segment(name),
        &[],
        None,
    )?
    .ok()?;
    if !json {
        println!("Removed image {name}");
    }
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf, Failure> {
    if let Ok(p) = std::fs::canonicalize(path) {
        return Ok(p);
    }
    // Not readable from here: pass it on made absolute, hearthd will say what is wrong.
    std::env::current_dir()
        .map(|d| d.join(path))
        .map_err(|e| usage(format!("Cannot resolve {}: {e}", path.display())))
}

/// Imports through the streamed form of `POST /v1/images`, drawing a progress bar on stderr
/// (when it is a terminal) from the server's progress lines.
fn import_streamed(c: &Client, request: &ImportImage) -> Result<ImageInfo, Failure> {
    let body = serde_json::to_vec(request).map_err(ClientError::from)?;
    let resp = c.stream(
        Method::POST,
        ApiPath::new("/v1/images"),
        &[("Accept", NDJSON)],
        Some(&body),
    )?;
    if resp.status != 200 {
        // A refusal before the copy started (or a server that does not stream).
        return Ok(resp.into_response()?.ok()?.json()?);
    }
    let mut bar = ProgressBar::new(&request.name);
    let mut result = None;
    for line in BoundedLines::new(resp.body) {
        let line = line.map_err(ClientError::Io)?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<ImportUpdate>(&line).map_err(ClientError::Decode)? {
            ImportUpdate::Progress { copied, total } => bar.draw(copied, total),
            ImportUpdate::Image(img) => result = Some(Ok(img)),
            ImportUpdate::Error(e) => result = Some(Err(e)),
        }
    }
    bar.clear();
    match result {
        Some(Ok(img)) => Ok(img),
        Some(Err(e)) => Err(Failure {
            code: 1,
            message: format!("{} ({})", e.message, e.code),
        }),
        None => Err(Failure {
            code: 4,
            message: "The import stream ended without a result (hearthd stopped?)".into(),
        }),
    }
}

/// A one-line progress bar on stderr, drawn only when stderr is a terminal.
struct ProgressBar {
    label: String,
    enabled: bool,
    drawn: bool,
}

impl ProgressBar {
    fn new(label: &str) -> Self {
        ProgressBar {
            label: label.to_owned(),
            enabled: std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    fn draw(&mut self, copied: u64, total: u64) {
        if !self.enabled {
            return;
        }
        eprint!("\r{} {}", bar(copied, total, 30), self.label);
        self.drawn = true;
    }

    fn clear(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[2K");
        }
    }
}
