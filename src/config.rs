//! Typed configuration from `KALSHIBOOK_*` environment variables, validated once at start-up.
//!
//! Every variable is documented in `.env.example` and the README. A missing or invalid one
//! is reported by name, with the value that was expected.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A configuration problem, naming the variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is required but not set: {hint}")]
    Missing {
        name: &'static str,
        hint: &'static str,
    },
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
}

/// A secret (password, key material, URL with credentials). `Debug` and `Display` never
/// print it, so configs can be logged.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is handed to the library that needs it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" | "pretty" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err("expected `text` or `json`".to_owned()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter directive, e.g. `info,kalshibook=debug`.
    pub filter: String,
}

#[derive(Clone, Debug)]
pub struct ClickHouseConfig {
    /// HTTP(S) endpoint, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    pub user: String,
    pub password: Secret,
    pub database: String,
    /// Whether requests and answers are LZ4-compressed (`KALSHIBOOK_CLICKHOUSE_COMPRESSION`,
    /// `lz4` or `none`). By default `none` when the URL names a loopback host, where there is
    /// no network to spare and compressing only takes CPU from the server and the collector,
    /// and `lz4` elsewhere.
    pub compress: bool,
}

#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// libpq-style URL, e.g. `postgres://user:pass@host:5432/kalshibook`.
    pub url: Secret,
    pub pool_size: usize,
    /// Whether a credit charge waits for its commit to reach disk
    /// (`KALSHIBOOK_CHARGE_SYNC_COMMIT`, default off). Off, a charge is as atomic and as
    /// unable to overspend, but a Postgres *server* crash can forget the charges of its last
    /// ~0.6 s (3 × `wal_writer_delay`): those requests were served and are not billed.
    pub charge_sync_commit: bool,
}

/// Dashboard sign-in.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// HS256 secret that signs dashboard access tokens (`KALSHIBOOK_JWT_SECRET`, at least 32
    /// bytes); `None` when unset.
    pub jwt_secret: Option<Secret>,
}

impl AuthConfig {
    /// The configured secret, for `serve`.
    ///
    /// # Errors
    /// [`ConfigError::Missing`] naming `KALSHIBOOK_JWT_SECRET` when it is unset.
    pub fn jwt_secret(&self) -> Result<&Secret, ConfigError> {
        self.jwt_secret.as_ref().ok_or(ConfigError::Missing {
            name: "KALSHIBOOK_JWT_SECRET",
            hint: "dashboard sessions are signed with it; set 32+ random bytes, e.g. \
                   `openssl rand -base64 48`",
        })
    }

    /// The configured secret or, when unset, a random one for this process only (logged as
    /// a warning: sessions then end with the process and are not shared between replicas).
    /// For development; production sets the variable.
    #[must_use]
    pub fn jwt_secret_or_dev_default(&self) -> Secret {
        if let Some(secret) = &self.jwt_secret {
            return secret.clone();
        }
        tracing::warn!(
            "KALSHIBOOK_JWT_SECRET is unset: signing dashboard sessions with a random \
             per-process secret (sessions end at restart and are not shared across replicas)"
        );
        let bytes: [u8; 48] = rand::random();
        Secret::new(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            bytes,
        ))
    }
}

/// Where the collector finds its Kalshi API private key.
#[derive(Clone, Debug)]
pub enum PrivateKey {
    Pem(Secret),
    Path(PathBuf),
}

#[derive(Clone, Debug)]
pub struct KalshiConfig {
    pub rest_url: String,
    pub ws_url: String,
    pub api_key_id: Option<String>,
    pub private_key: Option<PrivateKey>,
}

/// What the collector records and how it buffers.
#[derive(Clone, Debug)]
pub struct CollectorConfig {
    /// Record only markets of these series (empty with `event_tickers` empty: every market).
    pub series_tickers: Vec<String>,
    pub event_tickers: Vec<String>,
    pub markets_per_subscription: usize,
    /// How often the open markets are listed again over REST (the lifecycle channel
    /// announces most changes at once; this catches what it does not).
    pub discovery_interval: Duration,
    /// Keep every exchange frame in `raw_frames`.
    pub record_raw_frames: bool,
    /// Rows held in memory while ClickHouse is away, before spilling to the spool.
    pub max_memory_bytes: usize,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub clickhouse: ClickHouseConfig,
    pub postgres: PostgresConfig,
    pub listen_addr: SocketAddr,
    pub log: LogConfig,
    /// Run the collector inside `serve`.
    pub collect: bool,
    pub kalshi: KalshiConfig,
    pub collector: CollectorConfig,
    /// Where the collector spills batches it cannot insert yet.
    pub spool_dir: PathBuf,
    /// How long a readiness probe waits for each dependency.
    pub ready_timeout: Duration,
    pub auth: AuthConfig,
}

const DEFAULT_KALSHI_REST_URL: &str = "https://external-api.kalshi.com/trade-api/v2";
const DEFAULT_KALSHI_WS_URL: &str = "wss://external-api-ws.kalshi.com/trade-api/ws/v2";

impl Config {
    /// Reads the process environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first missing or invalid variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup` (the environment, or a map in tests).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first missing or invalid variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(&lookup);
        let clickhouse_url =
            vars.url("KALSHIBOOK_CLICKHOUSE_URL", Some("http://127.0.0.1:8123"))?;
        let compress = match vars.raw("KALSHIBOOK_CLICKHOUSE_COMPRESSION").as_deref() {
            None | Some("") => !names_loopback_host(&clickhouse_url),
            Some("lz4") => true,
            Some("none") => false,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "KALSHIBOOK_CLICKHOUSE_COMPRESSION",
                    value: other.to_owned(),
                    reason: "expected lz4 or none".to_owned(),
                });
            }
        };
        let clickhouse = ClickHouseConfig {
            url: clickhouse_url,
            compress,
            user: vars.string("KALSHIBOOK_CLICKHOUSE_USER", "default"),
            password: Secret::new(vars.string("KALSHIBOOK_CLICKHOUSE_PASSWORD", "")),
            database: vars.identifier("KALSHIBOOK_CLICKHOUSE_DATABASE", "kalshibook")?,
        };
        let postgres = PostgresConfig {
            url: Secret::new(vars.postgres_url("KALSHIBOOK_POSTGRES_URL")?),
            pool_size: vars.parse("KALSHIBOOK_POSTGRES_POOL_SIZE", 16)?,
            charge_sync_commit: vars.flag("KALSHIBOOK_CHARGE_SYNC_COMMIT")?,
        };
        let private_key = match (
            lookup("KALSHIBOOK_KALSHI_PRIVATE_KEY_PEM").filter(|v| !v.is_empty()),
            lookup("KALSHIBOOK_KALSHI_PRIVATE_KEY_PATH").filter(|v| !v.is_empty()),
        ) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    name: "KALSHIBOOK_KALSHI_PRIVATE_KEY_PEM",
                    value: "***".to_owned(),
                    reason: "set either it or KALSHIBOOK_KALSHI_PRIVATE_KEY_PATH, not both"
                        .to_owned(),
                });
            }
            (Some(pem), None) => Some(PrivateKey::Pem(Secret::new(pem))),
            (None, Some(path)) => Some(PrivateKey::Path(PathBuf::from(path))),
            (None, None) => None,
        };
        let kalshi = KalshiConfig {
            rest_url: vars.url("KALSHIBOOK_KALSHI_REST_URL", Some(DEFAULT_KALSHI_REST_URL))?,
            ws_url: vars.url("KALSHIBOOK_KALSHI_WS_URL", Some(DEFAULT_KALSHI_WS_URL))?,
            api_key_id: lookup("KALSHIBOOK_KALSHI_API_KEY_ID").filter(|v| !v.is_empty()),
            private_key,
        };
        Ok(Self {
            clickhouse,
            postgres,
            listen_addr: vars.parse("KALSHIBOOK_LISTEN_ADDR", "127.0.0.1:8080".parse().ok())?,
            log: LogConfig {
                format: vars.parse("KALSHIBOOK_LOG_FORMAT", Some(LogFormat::Text))?,
                filter: vars.string("KALSHIBOOK_LOG", "info"),
            },
            collect: vars.flag("KALSHIBOOK_COLLECT")?,
            kalshi,
            collector: CollectorConfig {
                series_tickers: vars.list("KALSHIBOOK_SERIES_TICKERS"),
                event_tickers: vars.list("KALSHIBOOK_EVENT_TICKERS"),
                markets_per_subscription: vars
                    .parse::<usize>("KALSHIBOOK_MARKETS_PER_SUBSCRIPTION", Some(250))?
                    .max(1),
                discovery_interval: Duration::from_secs(
                    vars.parse::<u64>("KALSHIBOOK_DISCOVERY_INTERVAL_SECS", Some(60))?
                        .max(1),
                ),
                record_raw_frames: vars.flag_default("KALSHIBOOK_RAW_FRAMES", true)?,
                max_memory_bytes: vars.parse::<usize>("KALSHIBOOK_SPOOL_MEMORY_MB", Some(256))?
                    << 20,
            },
            spool_dir: PathBuf::from(vars.string("KALSHIBOOK_SPOOL_DIR", ".local/spool")),
            ready_timeout: Duration::from_millis(
                vars.parse("KALSHIBOOK_READY_TIMEOUT_MS", Some(2000u64))?,
            ),
            auth: AuthConfig {
                jwt_secret: vars.jwt_secret("KALSHIBOOK_JWT_SECRET")?,
            },
        })
    }
}

/// Typed readers over a lookup function; each error names its variable.
struct Vars<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Vars<'_> {
    fn raw(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|value| !value.is_empty())
    }

    fn string(&self, name: &'static str, default: &str) -> String {
        self.raw(name).unwrap_or_else(|| default.to_owned())
    }

    fn parse<T>(&self, name: &'static str, default: impl Into<Option<T>>) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.raw(name) {
            Some(value) => value
                .trim()
                .parse()
                .map_err(|error: T::Err| ConfigError::Invalid {
                    name,
                    value,
                    reason: error.to_string(),
                }),
            None => default.into().ok_or(ConfigError::Missing {
                name,
                hint: "see .env.example",
            }),
        }
    }

    fn list(&self, name: &'static str) -> Vec<String> {
        self.raw(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn flag(&self, name: &'static str) -> Result<bool, ConfigError> {
        self.flag_default(name, false)
    }

    fn flag_default(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self
            .raw(name)
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None => Ok(default),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some(other) => Err(ConfigError::Invalid {
                name,
                value: other.to_owned(),
                reason: "expected 1 or 0 (true/false)".to_owned(),
            }),
        }
    }

    fn url(&self, name: &'static str, default: Option<&str>) -> Result<String, ConfigError> {
        let value = match self.raw(name) {
            Some(value) => value,
            None => default.map(str::to_owned).ok_or(ConfigError::Missing {
                name,
                hint: "a URL such as http://127.0.0.1:8123",
            })?,
        };
        let has_scheme = ["http://", "https://", "ws://", "wss://"]
            .iter()
            .any(|scheme| value.starts_with(scheme));
        if has_scheme && value.len() > value.find("://").map_or(0, |i| i + 3) {
            Ok(value.trim_end_matches('/').to_owned())
        } else {
            Err(ConfigError::Invalid {
                name,
                value,
                reason: "expected an absolute URL starting with http(s):// or ws(s)://".to_owned(),
            })
        }
    }

    fn postgres_url(&self, name: &'static str) -> Result<String, ConfigError> {
        let value = self.raw(name).ok_or(ConfigError::Missing {
            name,
            hint: "a URL such as postgres://postgres:postgres@127.0.0.1:5432/kalshibook",
        })?;
        match value.parse::<tokio_postgres::Config>() {
            Ok(_) => Ok(value),
            Err(error) => Err(ConfigError::Invalid {
                name,
                value: "***".to_owned(),
                reason: error.to_string(),
            }),
        }
    }

    /// A signing secret: optional, but when set long enough to resist guessing.
    fn jwt_secret(&self, name: &'static str) -> Result<Option<Secret>, ConfigError> {
        match self.raw(name) {
            None => Ok(None),
            Some(value) if value.len() >= crate::accounts::MIN_JWT_SECRET_BYTES => {
                Ok(Some(Secret::new(value)))
            }
            Some(_) => Err(ConfigError::Invalid {
                name,
                value: "***".to_owned(),
                reason: format!(
                    "needs at least {} bytes (e.g. `openssl rand -base64 48`)",
                    crate::accounts::MIN_JWT_SECRET_BYTES
                ),
            }),
        }
    }

    /// A database name we interpolate into DDL, so restricted to a safe alphabet.
    fn identifier(&self, name: &'static str, default: &str) -> Result<String, ConfigError> {
        let value = self.string(name, default);
        let valid = value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && value
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if valid {
            Ok(value)
        } else {
            Err(ConfigError::Invalid {
                name,
                value,
                reason: "expected letters, digits and underscores, not starting with a digit"
                    .to_owned(),
            })
        }
    }
}

/// Whether `url`'s host is this machine (`localhost` or a loopback address).
fn names_loopback_host(url: &str) -> bool {
    let Some(host) = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
    else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    const PG: (&str, &str) = ("KALSHIBOOK_POSTGRES_URL", "postgres://u:p@localhost/db");

    #[test]
    fn defaults_apply_when_only_required_vars_are_set() {
        let config = config(&[PG]).expect("valid");
        assert_eq!(config.clickhouse.url, "http://127.0.0.1:8123");
        assert_eq!(config.clickhouse.database, "kalshibook");
        assert_eq!(config.listen_addr.port(), 8080);
        assert_eq!(config.log.format, LogFormat::Text);
        assert!(!config.collect);
        assert_eq!(config.collector.discovery_interval, Duration::from_secs(60));
        let every_ten = self::config(&[PG, ("KALSHIBOOK_DISCOVERY_INTERVAL_SECS", "10")]);
        assert_eq!(
            every_ten.unwrap().collector.discovery_interval,
            Duration::from_secs(10)
        );
    }

    #[test]
    fn clickhouse_compression_is_off_on_loopback_unless_asked() {
        let compress = |pairs: &[(&str, &str)]| {
            let mut all = vec![PG];
            all.extend_from_slice(pairs);
            config(&all).map(|c| c.clickhouse.compress).ok()
        };
        assert_eq!(compress(&[]), Some(false), "the default URL is 127.0.0.1");
        for url in [
            "http://localhost:8123",
            "http://[::1]:8123",
            "http://127.0.0.2:8123",
        ] {
            assert_eq!(
                compress(&[("KALSHIBOOK_CLICKHOUSE_URL", url)]),
                Some(false),
                "{url}"
            );
        }
        for url in ["https://ch.example.com:8443", "http://10.0.0.5:8123"] {
            assert_eq!(
                compress(&[("KALSHIBOOK_CLICKHOUSE_URL", url)]),
                Some(true),
                "{url}"
            );
        }
        assert_eq!(
            compress(&[("KALSHIBOOK_CLICKHOUSE_COMPRESSION", "lz4")]),
            Some(true)
        );
        assert_eq!(
            compress(&[
                ("KALSHIBOOK_CLICKHOUSE_URL", "https://ch.example.com"),
                ("KALSHIBOOK_CLICKHOUSE_COMPRESSION", "none")
            ]),
            Some(false)
        );
        assert!(matches!(
            config(&[PG, ("KALSHIBOOK_CLICKHOUSE_COMPRESSION", "gzip")]),
            Err(ConfigError::Invalid {
                name: "KALSHIBOOK_CLICKHOUSE_COMPRESSION",
                ..
            })
        ));
    }

    #[test]
    fn missing_postgres_url_is_named() {
        let error = config(&[]).unwrap_err().to_string();
        assert!(error.contains("KALSHIBOOK_POSTGRES_URL"), "{error}");
    }

    #[test]
    fn invalid_values_are_named() {
        for (name, value) in [
            ("KALSHIBOOK_LISTEN_ADDR", "not-an-address"),
            ("KALSHIBOOK_CLICKHOUSE_URL", "localhost:8123"),
            ("KALSHIBOOK_CLICKHOUSE_DATABASE", "drop table;"),
            ("KALSHIBOOK_LOG_FORMAT", "yaml"),
            ("KALSHIBOOK_COLLECT", "maybe"),
            ("KALSHIBOOK_POSTGRES_POOL_SIZE", "-3"),
            ("KALSHIBOOK_CHARGE_SYNC_COMMIT", "maybe"),
            ("KALSHIBOOK_DISCOVERY_INTERVAL_SECS", "soon"),
        ] {
            let error = config(&[PG, (name, value)]).unwrap_err().to_string();
            assert!(error.starts_with(name), "{name}: {error}");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let config = config(&[PG, ("KALSHIBOOK_CLICKHOUSE_PASSWORD", "hunter2")]).unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("u:p@"), "{printed}");
    }

    #[test]
    fn jwt_secret_is_optional_but_long_when_set() {
        let unset = config(&[PG]).unwrap();
        let error = unset.auth.jwt_secret().unwrap_err().to_string();
        assert!(error.contains("KALSHIBOOK_JWT_SECRET"), "{error}");
        assert!(unset.auth.jwt_secret_or_dev_default().expose().len() >= 32);

        let short = config(&[PG, ("KALSHIBOOK_JWT_SECRET", "tooshort")]);
        let error = short.unwrap_err().to_string();
        assert!(error.starts_with("KALSHIBOOK_JWT_SECRET"), "{error}");
        assert!(!error.contains("tooshort"), "{error}");

        let secret = "s".repeat(40);
        let set = config(&[PG, ("KALSHIBOOK_JWT_SECRET", &secret)]).unwrap();
        assert_eq!(set.auth.jwt_secret().unwrap().expose(), secret);
        assert!(!format!("{set:?}").contains(&secret));
    }

    #[test]
    fn json_logs_and_collect_flag_parse() {
        let config = config(&[
            PG,
            ("KALSHIBOOK_LOG_FORMAT", "json"),
            ("KALSHIBOOK_COLLECT", "1"),
        ])
        .unwrap();
        assert_eq!(config.log.format, LogFormat::Json);
        assert!(config.collect);
    }
}
