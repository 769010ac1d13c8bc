//! The runtime's options, from containerd's configuration.
//!
//! For a runtime type other than runc's, containerd's CRI sends the runtime's `options` table
//! in every Create as `runtimeoptions.v1.Options`: `ConfigPath` when the table names a file,
//! else `ConfigBody`, the table itself as TOML. `ctr run --runtime-config-path FILE` sends
//! the same message with the path. Either way the settings are TOML keys (see
//! `config/containerd/`); Create fails on a key this shim does not know, so a typo is not
//! silently ignored.

use std::path::PathBuf;
use std::time::Duration;

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::CodedInputStream;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Where compiled modules are cached unless the options or `CONTAINERD_SHIM_WASM_CACHE_DIR`
/// say otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/containerd-shim-wasm/cache";
pub const CACHE_DIR_ENV: &str = "CONTAINERD_SHIM_WASM_CACHE_DIR";

/// How long a new guest may take to confine itself and report ready before Create fails.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest module the shim copies for a guest (it passes through a memfd the shim makes).
pub const DEFAULT_MAX_MODULE_BYTES: u64 = 1 << 30;

/// The most the compiled-module cache keeps on disk; past it, the least recently used entries
/// are removed (a large interpreter's artifact is around 100 MB).
pub const DEFAULT_MAX_CACHE_BYTES: u64 = 4 << 30;

/// The type containerd's CRI gives the options of a runtime it has no options type for.
const RUNTIME_OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";

/// The shim's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// The compiled-module cache directory (`CacheDir`).
    pub cache_dir: PathBuf,
    /// See [`DEFAULT_READY_TIMEOUT`] (`ReadyTimeoutSeconds`).
    pub ready_timeout: Duration,
    /// The shim's log level, `debug`, `info`, `warn` or `error` (`LogLevel`); `None` keeps
    /// the level containerd started the shim with (debug under containerd's debug level).
    pub log_level: Option<log::LevelFilter>,
    /// See [`DEFAULT_MAX_MODULE_BYTES`] (`MaxModuleBytes`).
    pub max_module_bytes: u64,
    /// See [`DEFAULT_MAX_CACHE_BYTES`] (`MaxCacheBytes`).
    pub max_cache_bytes: u64,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            cache_dir: std::env::var_os(CACHE_DIR_ENV)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR)),
            ready_timeout: DEFAULT_READY_TIMEOUT,
            log_level: None,
            max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
            max_cache_bytes: DEFAULT_MAX_CACHE_BYTES,
        }
    }
}

/// The TOML keys, named as containerd's own runtime options are (`SystemdCgroup`, ...).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct OptionsTable {
    cache_dir: Option<PathBuf>,
    ready_timeout_seconds: Option<u64>,
    log_level: Option<String>,
    max_module_bytes: Option<u64>,
    max_cache_bytes: Option<u64>,
    // containerd's own keys of the message, which may be in the table too.
    #[allow(dead_code)]
    type_url: Option<String>,
    #[allow(dead_code)]
    config_path: Option<String>,
}

impl RuntimeOptions {
    /// The options of a Create request (`CreateTaskRequest.options`); the defaults when there
    /// are none.
    pub fn from_request(options: Option<&Any>) -> Result<RuntimeOptions> {
        let Some(any) = options.filter(|a| !a.type_url.is_empty()) else {
            return Ok(RuntimeOptions::default());
        };
        if !any.type_url.ends_with(RUNTIME_OPTIONS_TYPE) {
            log::warn!(
                "runtime options of type {} are not this shim's ({RUNTIME_OPTIONS_TYPE}); using the defaults",
                any.type_url
            );
            return Ok(RuntimeOptions::default());
        }
        let (config_path, config_body) = decode(&any.value)?;
        let toml_text = match config_path {
            Some(path) => std::fs::read_to_string(&path).map_err(|e| {
                Error::InvalidArgument(format!("read the runtime options file {path}: {e}"))
            })?,
            None => String::from_utf8_lossy(&config_body).into_owned(),
        };
        Self::from_toml(&toml_text)
    }

    /// The options from the TOML text of the runtime's options table.
    pub fn from_toml(text: &str) -> Result<RuntimeOptions> {
        let table: OptionsTable = toml::from_str(text).map_err(|e| {
            Error::InvalidArgument(format!(
                "the wasm runtime's options are not valid: {}; the keys are CacheDir, MaxCacheBytes, ReadyTimeoutSeconds, MaxModuleBytes and LogLevel",
                e.message()
            ))
        })?;
        let mut options = RuntimeOptions::default();
        if let Some(dir) = table.cache_dir {
            options.cache_dir = dir;
        }
        if let Some(seconds) = table.ready_timeout_seconds {
            if seconds == 0 {
                return Err(Error::InvalidArgument(
                    "the wasm runtime's ReadyTimeoutSeconds must be at least 1".into(),
                ));
            }
            options.ready_timeout = Duration::from_secs(seconds);
        }
        if let Some(max) = table.max_module_bytes {
            options.max_module_bytes = max;
        }
        if let Some(max) = table.max_cache_bytes {
            options.max_cache_bytes = max;
        }
        if let Some(level) = table.log_level {
            let parsed = level.parse::<log::LevelFilter>().map_err(|_| {
                Error::InvalidArgument(format!(
                    "the wasm runtime's LogLevel {level:?} is not one of debug, info, warn, error"
                ))
            })?;
            options.log_level = Some(parsed);
        }
        Ok(options)
    }
}

/// `runtimeoptions.v1.Options { string type_url = 1; string config_path = 2; bytes
/// config_body = 3; }`, read field by field (the shim's protos do not include this message).
fn decode(bytes: &[u8]) -> Result<(Option<String>, Vec<u8>)> {
    let broken = |e: containerd_shim::protos::protobuf::Error| {
        Error::InvalidArgument(format!("the runtime options message is malformed: {e}"))
    };
    let mut input = CodedInputStream::from_bytes(bytes);
    let (mut path, mut body) = (None, Vec::new());
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(broken)? {
        match tag >> 3 {
            2 => path = Some(input.read_string().map_err(broken)?).filter(|p| !p.is_empty()),
            3 => body = input.read_bytes().map_err(broken)?,
            _ => {
                let wire_type = containerd_shim::protos::protobuf::rt::WireType::new(tag & 7)
                    .ok_or_else(|| {
                        Error::InvalidArgument("the runtime options message is malformed".into())
                    })?;
                input.skip_field(wire_type).map_err(broken)?;
            }
        }
    }
    Ok((path, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The message as containerd encodes it.
    fn encoded(path: &str, body: &str) -> Any {
        let mut value = Vec::new();
        let mut out = containerd_shim::protos::protobuf::CodedOutputStream::vec(&mut value);
        out.write_string(1, "").unwrap();
        out.write_string(2, path).unwrap();
        out.write_bytes(3, body.as_bytes()).unwrap();
        out.flush().unwrap();
        drop(out);
        Any {
            type_url: RUNTIME_OPTIONS_TYPE.into(),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn the_options_table_arrives_as_toml_in_the_body_or_a_file() {
        let body =
            "CacheDir = \"/srv/wasm-cache\"\nReadyTimeoutSeconds = 5\nLogLevel = \"debug\"\nMaxModuleBytes = 1024\nMaxCacheBytes = 2048\n";
        let options = RuntimeOptions::from_request(Some(&encoded("", body))).unwrap();
        assert_eq!(options.cache_dir, PathBuf::from("/srv/wasm-cache"));
        assert_eq!(options.ready_timeout, Duration::from_secs(5));
        assert_eq!(options.log_level, Some(log::LevelFilter::Debug));
        assert_eq!(options.max_module_bytes, 1024);
        assert_eq!(options.max_cache_bytes, 2048);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wasm.toml");
        std::fs::write(&file, "ReadyTimeoutSeconds = 7\n").unwrap();
        let options =
            RuntimeOptions::from_request(Some(&encoded(file.to_str().unwrap(), ""))).unwrap();
        assert_eq!(options.ready_timeout, Duration::from_secs(7));
        assert_eq!(options.cache_dir, RuntimeOptions::default().cache_dir);

        assert_eq!(
            RuntimeOptions::from_request(None).unwrap(),
            RuntimeOptions::default()
        );
    }

    /// The options tables of the shipped containerd snippets, as CRI would send them.
    #[test]
    fn the_shipped_snippets_options_are_the_defaults() {
        for snippet in ["wasm-runtime-v2.toml", "wasm-runtime-v3.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config/containerd")
                .join(snippet);
            let text = std::fs::read_to_string(&path).unwrap();
            let (_, table) = text.split_once(".options]").expect("an options table");
            let options = RuntimeOptions::from_toml(table).unwrap();
            assert_eq!(options, RuntimeOptions::default(), "{snippet}");
        }
    }

    #[test]
    fn a_wrong_key_or_value_fails_with_the_reason() {
        let typo = RuntimeOptions::from_toml("ReadyTimeoutSecs = 5")
            .unwrap_err()
            .to_string();
        assert!(typo.contains("ReadyTimeoutSecs"), "{typo}");
        let zero = RuntimeOptions::from_toml("ReadyTimeoutSeconds = 0")
            .unwrap_err()
            .to_string();
        assert!(zero.contains("at least 1"), "{zero}");
        let level = RuntimeOptions::from_toml("LogLevel = \"loud\"")
            .unwrap_err()
            .to_string();
        assert!(level.contains("loud"), "{level}");
    }
}
