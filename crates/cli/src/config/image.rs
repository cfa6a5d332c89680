//! `[[image]]` entries: an image reference and the settings it has of its own. A per-image
//! setting is a field of [`ImageSettings`] plus one arm in [`ImageEntry::from_table`]; each
//! overrides, for that image only, what the flags say for all.

use std::path::Path;

use clap::ValueEnum as _;
use registry_core::ImageReference;
use toml::de::{DeTable, DeValue};

use super::ConfigError;
use super::lines::Lines;
use crate::refresh_kind::RefreshKind;

/// What one image has of its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageSettings {
    /// What to do when this image's digest moves (`refresh = "docker"`), instead of `--refresh`.
    pub refresh: Option<RefreshKind>,
}

impl ImageSettings {
    pub fn is_empty(&self) -> bool {
        *self == ImageSettings::default()
    }
}

/// One image of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageEntry {
    pub reference: ImageReference,
    pub settings: ImageSettings,
    pub line: usize,
}

/// The keys an `[[image]]` table may hold.
const IMAGE_KEYS: &str = "`ref`, `refresh`";

impl ImageEntry {
    pub fn plain(reference: ImageReference, line: usize) -> ImageEntry {
        ImageEntry {
            reference,
            settings: ImageSettings::default(),
            line,
        }
    }

    pub fn from_table(path: &Path, lines: &Lines, table: &DeTable<'_>, line: usize) -> Result<ImageEntry, ConfigError> {
        let mut reference = None;
        let mut settings = ImageSettings::default();
        for (key, value) in table.iter() {
            let name: &str = key.get_ref();
            let key_line = lines.line(key.span().start);
            let at = |what: String| ConfigError::new(path, Some(key_line), Some(&format!("image.{name}")), what);
            let text_value = || match value.get_ref() {
                DeValue::String(text) => Ok(text.trim().to_owned()),
                _ => Err(at("expected a string".into())),
            };
            match name {
                "ref" => {
                    let raw = text_value()?;
                    reference = Some(
                        raw.parse::<ImageReference>()
                            .map_err(|e| at(format!("{raw:?} is not an image reference: {e}")))?,
                    );
                }
                "refresh" => {
                    let raw = text_value()?;
                    settings.refresh = Some(RefreshKind::from_str(&raw, true).map_err(|_| {
                        at(format!(
                            "{raw:?} is not a refresh mode; expected one of none, docker, webhook, exec"
                        ))
                    })?);
                }
                _ => return Err(at(format!("unknown key; an [[image]] table holds {IMAGE_KEYS}"))),
            }
        }
        let reference = reference.ok_or_else(|| {
            ConfigError::new(path, Some(line), Some("image"), "an [[image]] table needs `ref`".into())
        })?;
        Ok(ImageEntry {
            reference,
            settings,
            line,
        })
    }
}
