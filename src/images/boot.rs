//! What a root filesystem image asks of the kernel command line: an image built with hearth's
//! init boots `init=/sbin/hearth-init` unless the create asks for the image's own init.

use hearth_proto::api::{check_boot_args, FieldError};
use hearth_proto::image_config::InitMode;
use hearth_proto::init::INIT_PATH;

use super::ImageMeta;

/// The `boot_args` of a create whose root filesystem is `image`, asking for `requested` init
/// (`None`: what the image was built for) with the user's `boot_args`. hearth's `init=` goes
/// first, so an `init=` the user wrote still wins (the kernel keeps the last one).
///
/// # Errors
/// `init`: hearth's init asked of an image built without it (it has no `/sbin/hearth-init`).
/// `boot_args`: the result is too long.
pub fn boot_args_for(
    image: &ImageMeta,
    requested: Option<InitMode>,
    boot_args: Option<&str>,
) -> Result<Option<String>, FieldError> {
    let built = image.oci.as_ref().map(|o| o.init);
    let init = match (requested, built) {
        (Some(InitMode::Hearth) | None, Some(InitMode::Hearth)) => InitMode::Hearth,
        (Some(InitMode::Hearth), _) => {
            return Err(FieldError {
                field: "init",
                reason: format!(
                    "image {} was not built with hearth's init (it has no {INIT_PATH}); use \
                     `image` or rebuild it with hearth's init",
                    image.name
                ),
            })
        }
        _ => InitMode::Image,
    };
    if init == InitMode::Image {
        return Ok(boot_args.map(str::to_owned));
    }
    let args = match boot_args.map(str::trim).filter(|a| !a.is_empty()) {
        Some(user) => format!("init={INIT_PATH} {user}"),
        None => format!("init={INIT_PATH}"),
    };
    check_boot_args(&args)?;
    Ok(Some(args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_proto::api_images::{ImageFormat, ImageKind};
    use hearth_proto::image_config::{ImageConfig, OciSource};

    fn image(built: Option<InitMode>) -> ImageMeta {
        ImageMeta {
            name: "img".into(),
            kind: ImageKind::Rootfs,
            format: ImageFormat::Ext4,
            size: 512,
            sha256: String::new(),
            source: "/x".into(),
            imported_unix: 0,
            oci: built.map(|init| OciSource {
                reference: "r".into(),
                manifest_digest: "sha256:0".into(),
                config: ImageConfig::default(),
                init,
                build_key: None,
            }),
        }
    }

    #[test]
    fn hearth_init_is_added_only_for_images_built_with_it() {
        let hearth = image(Some(InitMode::Hearth));
        let own = image(Some(InitMode::Image));
        let plain = image(None);
        let init = "init=/sbin/hearth-init";
        assert_eq!(
            boot_args_for(&hearth, None, None).unwrap().as_deref(),
            Some(init)
        );
        assert_eq!(
            boot_args_for(&hearth, Some(InitMode::Hearth), Some(" quiet ")).unwrap(),
            Some(format!("{init} quiet"))
        );
        assert_eq!(
            boot_args_for(&hearth, Some(InitMode::Image), Some("quiet"))
                .unwrap()
                .as_deref(),
            Some("quiet")
        );
        assert_eq!(
            boot_args_for(&hearth, Some(InitMode::Image), None).unwrap(),
            None
        );
        for img in [&own, &plain] {
            assert_eq!(
                boot_args_for(img, None, Some("quiet")).unwrap().as_deref(),
                Some("quiet")
            );
            assert_eq!(
                boot_args_for(img, Some(InitMode::Image), None).unwrap(),
                None
            );
            let e = boot_args_for(img, Some(InitMode::Hearth), None).unwrap_err();
            assert_eq!(e.field, "init");
        }
        let long = "a".repeat(hearth_proto::api::MAX_BOOT_ARGS - 5);
        assert_eq!(
            boot_args_for(&hearth, None, Some(&long)).unwrap_err().field,
            "boot_args"
        );
    }
}
