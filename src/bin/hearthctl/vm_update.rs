//! `hearthctl vm update NAME [--restart P] [--ttl [+]D] [--on-expiry stop|delete|snapshot] [--label k=v]...`:
//! `PATCH /v1/vms/{name}`. The input is checked here first (exit 2, nothing sent).

use clap::Args;
use hearth::client::{ApiPath, Client, Method};
use hearth_proto::api::{parse_label, VmInfo};
use hearth_proto::api_policy::{RestartPolicy, TtlChange, UpdateVm};

use crate::vm::ExpiryArg;
use crate::{usage, Out};

/// Arguments of `vm update`.
#[derive(Debug, Args)]
pub(crate) struct UpdateArgs {
    /// The VM.
    name: String,
    /// New restart policy: no, on-failure, on-failure:N, always.
    #[arg(long)]
    restart: Option<RestartPolicy>,
    /// New time limit from now (`30m`), or an extension of the current one (`+15m`).
    #[arg(long, allow_hyphen_values = true)]
    ttl: Option<String>,
    /// What happens at the time limit.
    #[arg(long, value_enum)]
    on_expiry: Option<ExpiryArg>,
    /// Replace the labels with these `key=value` (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Remove every label.
    #[arg(long, conflicts_with = "labels")]
    clear_labels: bool,
}

/// Sends the update and shows the VM.
pub(crate) fn update(c: &Client, json: bool, args: UpdateArgs) -> Out {
    if let Some(ttl) = &args.ttl {
        ttl.parse::<TtlChange>()
            .map_err(|e| usage(format!("--ttl: {e}")))?;
    }
    let labels =
        (args.clear_labels || !args.labels.is_empty()).then(|| args.labels.into_iter().collect());
    let body = UpdateVm {
        labels,
        restart: args.restart,
        ttl: args.ttl,
        on_expiry: args.on_expiry.map(Into::into),
    };
    if body == UpdateVm::default() {
        return Err(usage(
            "nothing to update: give --restart, --ttl, --on-expiry, --label or --clear-labels"
                .into(),
        ));
    }
    let vm: VmInfo = c.send_json(
        Method::PATCH,
        ApiPath::new("/v1/vms").segment(&args.name),
        &[],
        &body,
    )?;
    crate::vm::show_vm(json, &vm);
    Ok(())
}
