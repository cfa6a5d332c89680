//! The config file (`imagewatch watch --config PATH`, env `IMAGEWATCH_CONFIG`): TOML whose
//! top-level keys are the long names of `imagewatch watch`'s flags (`interval = "30s"`,
//! `concurrency = 16`, `image = [...]`), applied beneath the command line and the environment,
//! and `[[image]]` tables for images with settings of their own (see [`image`]). A new flag
//! gets its config key for free; a new per-image setting is one field in `image::ImageSettings`.
//!
//! It owns reading and checking the file and turning it into defaults for the flag parser;
//! what a value means is decided by the flag's own parser, so a value is valid in the file
//! exactly when it is valid on the command line. Errors name the file, the line and the key.

pub mod file;
pub mod image;
pub mod lines;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

pub use file::{ConfigFile, Setting};

/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "IMAGEWATCH_CONFIG";

/// The subcommand whose flags the file's keys name.
const WATCH: &str = "watch";

/// What is wrong with a config file, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub what: String,
}

impl ConfigError {
    pub fn new(path: &Path, line: Option<usize>, key: Option<&str>, what: String) -> ConfigError {
        ConfigError {
            path: path.to_owned(),
            line,
            key: key.map(str::to_owned),
            what,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.what)
    }
}

impl std::error::Error for ConfigError {}

/// `argv` with the config file's settings appended for every flag the command line and the
/// environment leave unset, when `argv` runs `watch` with a config file; otherwise `argv`
/// unchanged (the parser then reports whatever is wrong with it).
pub fn with_file_defaults(command: &Command, argv: Vec<OsString>) -> Result<Vec<OsString>, ConfigError> {
    let Ok(matches) = command.clone().try_get_matches_from(&argv) else {
        return Ok(argv);
    };
    let (Some(watch), Some(watch_command)) = (matches.subcommand_matches(WATCH), command.find_subcommand(WATCH)) else {
        return Ok(argv);
    };
    let Some(path) = watch.get_one::<PathBuf>("config") else {
        return Ok(argv);
    };
    let file = ConfigFile::load(path)?;
    let extra = defaults(&file, watch_command, Some(watch))?;
    validate(command, &argv, &file, watch_command, Some(watch))?;
    let mut full = argv;
    full.extend(extra);
    Ok(full)
}

/// Checks `path` alone, as `imagewatch config check` does: every key names a flag of
/// `watch`, every value parses as that flag's value, every image is a reference. Answers a
/// summary for people.
pub fn check(command: &Command, path: &Path) -> Result<String, ConfigError> {
    let file = ConfigFile::load(path)?;
    let watch_command = command
        .find_subcommand(WATCH)
        .ok_or_else(|| ConfigError::new(path, None, None, "no watch command to check against".into()))?;
    let argv: Vec<OsString> = vec![command.get_name().into(), WATCH.into()];
    defaults(&file, watch_command, None)?;
    validate(command, &argv, &file, watch_command, None)?;
    let own = file.images.iter().filter(|image| !image.settings.is_empty()).count();
    Ok(format!(
        "{}: valid: {} setting(s), {} image(s), {own} with settings of their own",
        path.display(),
        file.settings.len(),
        file.images.len()
    ))
}

/// Whether the command line or the environment set the flag `id` (they win over the file).
fn overridden(given: Option<&ArgMatches>, id: &str) -> bool {
    given.is_some_and(|matches| {
        matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    })
}

/// The file's settings as `watch` arguments, for the flags `given` leaves unset (all of them
/// when `given` is `None`).
fn defaults(file: &ConfigFile, watch: &Command, given: Option<&ArgMatches>) -> Result<Vec<OsString>, ConfigError> {
    let mut extra: Vec<OsString> = Vec::new();
    for setting in &file.settings {
        extra.extend(setting_args(file, setting, watch, given)?);
    }
    let images_arg = watch.get_arguments().find(|arg| arg.get_long() == Some("image"));
    if let Some(arg) = images_arg
        && !overridden(given, arg.get_id().as_str())
    {
        extra.extend(
            file.images
                .iter()
                .map(|image| OsString::from(format!("--image={}", image.reference))),
        );
    }
    Ok(extra)
}

fn setting_args(
    file: &ConfigFile,
    setting: &Setting,
    watch: &Command,
    given: Option<&ArgMatches>,
) -> Result<Vec<OsString>, ConfigError> {
    let at = |what: String| ConfigError::new(&file.path, Some(setting.line), Some(&setting.key), what);
    if setting.key == "config" {
        return Err(at("a config file cannot name another one".into()));
    }
    let Some(arg) = watch
        .get_arguments()
        .find(|arg| arg.get_long() == Some(setting.key.as_str()))
    else {
        return Err(at(
            "unknown key; expected the long name of an `imagewatch watch` flag (e.g. `interval`, `concurrency`, `image`, `refresh`), without the dashes".into(),
        ));
    };
    if overridden(given, arg.get_id().as_str()) {
        return Ok(Vec::new());
    }
    if !arg.get_action().takes_values() {
        return match setting.values.as_slice() {
            [value] if value == "true" => Ok(vec![format!("--{}", setting.key).into()]),
            [value] if value == "false" => Ok(Vec::new()),
            _ => Err(at("expected `true` or `false`".into())),
        };
    }
    Ok(setting
        .values
        .iter()
        .map(|value| OsString::from(format!("--{}={value}", setting.key)))
        .collect())
}

/// Parses `argv` with the file's settings one at a time, so a value the flag refuses is
/// reported at its line.
fn validate(
    command: &Command,
    argv: &[OsString],
    file: &ConfigFile,
    watch: &Command,
    given: Option<&ArgMatches>,
) -> Result<(), ConfigError> {
    for setting in &file.settings {
        let args = setting_args(file, setting, watch, given)?;
        if args.is_empty() {
            continue;
        }
        let mut trial = argv.to_vec();
        trial.extend(args);
        if let Err(error) = command.clone().try_get_matches_from(trial) {
            let message = error.to_string();
            let first = message.lines().next().unwrap_or_default();
            return Err(ConfigError::new(
                &file.path,
                Some(setting.line),
                Some(&setting.key),
                first.trim_start_matches("error: ").to_owned(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
