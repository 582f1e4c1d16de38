//! The permission bits of the files a sink creates (`mode` of the file and audit sinks).
//!
//! The default, `0640`, lets the service's group read the events: under systemd
//! `LogsDirectoryMode=0750` admits that group into `/var/log/chatwatch`, so an operator in the
//! group (or a log shipper given `SupplementaryGroups=`) can read every event file while nobody
//! else can. The mode is set with `fchmod` right after the file is created, so it does not
//! depend on the process umask (the unit's `UMask=0077` would otherwise turn 0640 into 0600).
//! A file that already exists keeps its permissions (an operator's `chmod` wins).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Permission bits (at most `0o777`), written in the configuration as an octal string
/// (`"0640"`, `"640"`, `"0o640"`) or a TOML octal integer (`0o640`). Default `0640`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(u32);

impl FileMode {
    /// The default: owner reads and writes, group reads.
    pub const DEFAULT: FileMode = FileMode(0o640);

    /// A mode from its bits; `None` above `0o777`.
    pub fn new(bits: u32) -> Option<FileMode> {
        (bits <= 0o777).then_some(FileMode(bits))
    }

    /// The permission bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Parses an octal string: `"0640"`, `"640"` or `"0o640"`.
    pub fn parse(text: &str) -> Result<FileMode, String> {
        let digits = text.trim();
        let digits = digits.strip_prefix("0o").unwrap_or(digits);
        u32::from_str_radix(digits, 8)
            .ok()
            .and_then(FileMode::new)
            .ok_or_else(|| {
                format!("`{text}` is not a file mode: write octal digits, e.g. \"0640\"")
            })
    }

    /// Gives the newly created `file` exactly this mode (the umask does not apply).
    pub fn apply(self, file: &std::fs::File) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(self.0))
    }
}

impl Default for FileMode {
    fn default() -> Self {
        FileMode::DEFAULT
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Serialize for FileMode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Text(text) => FileMode::parse(&text).map_err(serde::de::Error::custom),
            Raw::Int(n) => u32::try_from(n)
                .ok()
                .and_then(FileMode::new)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "{n} is not a file mode: write it in octal, \"0640\" or 0o640"
                    ))
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Holder {
        mode: FileMode,
    }

    fn read(toml_text: &str) -> Result<FileMode, String> {
        toml::from_str::<Holder>(toml_text)
            .map(|h| h.mode)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn octal_strings_and_integers_are_read() {
        assert_eq!(read("mode = \"0640\"").unwrap().bits(), 0o640);
        assert_eq!(read("mode = \"600\"").unwrap().bits(), 0o600);
        assert_eq!(read("mode = \"0o644\"").unwrap().bits(), 0o644);
        assert_eq!(read("mode = 0o640").unwrap().bits(), 0o640);
        assert_eq!(FileMode::default().to_string(), "0640");
    }

    #[test]
    fn a_decimal_or_out_of_range_mode_is_refused_with_a_hint() {
        let err = read("mode = 640").unwrap_err();
        assert!(err.contains("octal"), "{err}");
        let err = read("mode = \"0999\"").unwrap_err();
        assert!(err.contains("not a file mode"), "{err}");
        assert!(read("mode = \"1777\"").is_err());
    }
}
