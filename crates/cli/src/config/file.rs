//! Reading a config file: TOML into settings (a long flag name with its values, in
//! command-line form) and `[[image]]` entries, each with the line it came from. It checks the
//! shape of the file only; what a value means is decided by the flag it names.

use std::path::{Path, PathBuf};

use registry_core::ImageReference;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::ConfigError;
use super::image::ImageEntry;
use super::lines::Lines;

/// The largest config file read (10,000 images with settings fit in a few MiB).
pub const MAX_CONFIG_BYTES: u64 = 32 * 1024 * 1024;

/// One top-level key: a long flag name and its values as they would be written after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub values: Vec<String>,
    pub line: usize,
}

/// A parsed config file.
#[derive(Clone, Debug, Default)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub settings: Vec<Setting>,
    pub images: Vec<ImageEntry>,
}

impl ConfigFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let whole = |what: String| ConfigError::new(path, None, None, what);
        let meta = std::fs::metadata(path).map_err(|e| whole(format!("cannot read the config file: {e}")))?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(whole(format!(
                "the config file is {} bytes, over the {MAX_CONFIG_BYTES}-byte limit",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| whole(format!("cannot read the config file: {e}")))?;
        ConfigFile::parse(path, &text)
    }

    /// Parses `text`, read from `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
        let lines = Lines::of(text);
        let line_of = |_: &str, offset: usize| lines.line(offset);
        let table = DeTable::parse(text).map_err(|e| {
            let line = e.span().map(|span| line_of(text, span.start));
            ConfigError::new(path, line, None, format!("not valid TOML: {}", e.message().trim()))
        })?;
        let mut file = ConfigFile {
            path: path.to_owned(),
            ..ConfigFile::default()
        };
        let mut keys: Vec<(&Spanned<_>, &Spanned<DeValue<'_>>)> = table.get_ref().iter().collect();
        keys.sort_by_key(|(key, _)| key.span().start);
        for (key, value) in keys {
            let name: &str = key.get_ref();
            let line = line_of(text, key.span().start);
            let at = |line: usize, what: String| ConfigError::new(path, Some(line), Some(name), what);
            match value.get_ref() {
                DeValue::Array(items) if name == "image" => {
                    for item in items.iter() {
                        let item_line = line_of(text, item.span().start);
                        let entry = match item.get_ref() {
                            DeValue::String(reference) => ImageEntry::plain(
                                parse_reference(reference).map_err(|what| at(item_line, what))?,
                                item_line,
                            ),
                            DeValue::Table(table) => ImageEntry::from_table(path, &lines, table, item_line)?,
                            _ => {
                                return Err(at(
                                    item_line,
                                    "expected an image reference (a string) or an [[image]] table".into(),
                                ));
                            }
                        };
                        file.images.push(entry);
                    }
                }
                DeValue::String(reference) if name == "image" => {
                    let reference = parse_reference(reference).map_err(|what| at(line, what))?;
                    file.images.push(ImageEntry::plain(reference, line));
                }
                DeValue::Table(_) => {
                    return Err(at(
                        line,
                        "unknown section; the file holds `imagewatch watch` flag names as keys and [[image]] tables"
                            .into(),
                    ));
                }
                DeValue::Array(items) => {
                    let values = items
                        .iter()
                        .map(|item| {
                            scalar(item.get_ref()).ok_or_else(|| {
                                at(
                                    line_of(text, item.span().start),
                                    "expected a list of strings, numbers or booleans".into(),
                                )
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    file.settings.push(Setting {
                        key: name.to_owned(),
                        values,
                        line,
                    });
                }
                other => {
                    let value =
                        scalar(other).ok_or_else(|| at(line, "expected a string, number, boolean or list".into()))?;
                    file.settings.push(Setting {
                        key: name.to_owned(),
                        values: vec![value],
                        line,
                    });
                }
            }
        }
        Ok(file)
    }
}

fn parse_reference(text: &str) -> Result<ImageReference, String> {
    text.trim()
        .parse()
        .map_err(|e| format!("{text:?} is not an image reference: {e}"))
}

/// A scalar in the form a command line would carry it.
fn scalar(value: &DeValue<'_>) -> Option<String> {
    match value {
        DeValue::String(text) => Some(text.to_string()),
        DeValue::Integer(integer) => i64::from_str_radix(integer.as_str(), integer.radix())
            .ok()
            .map(|n| n.to_string()),
        DeValue::Float(float) => Some(float.as_str().to_owned()),
        DeValue::Boolean(flag) => Some(flag.to_string()),
        _ => None,
    }
}
