//! [`DeviceInfo`], what an agent tells about itself: bounded, and free of characters that
//! render as other text.
//! It must not panic on any input: an over-long or hidden-character field is refused or cut.

use super::*;

/// What the agent tells the server about the device, shown to the user in discovery. Every field
/// is bounded (see [`limits`]) and free of the characters [`is_hidden`] names (controls, bidi
/// controls, zero-width and other default-ignorable characters), so that no name renders as
/// another: `"Prusa\u{202E}4KM"` is refused, not shown as "PrusaMK4". Other non-ASCII text is
/// kept as sent (accents, CJK, single-code-point emoji); emoji sequences joined by U+200D or
/// styled by a variation selector are refused with the rest.
///
/// ```
/// use lanlink::DeviceInfo;
/// use lanlink::wire::WireError;
/// let info = DeviceInfo::new("printer.local", "Prusa MK4", "lanlink-agent", "0.1.0").unwrap();
/// assert_eq!(info.hostname(), "printer.local");
/// assert!(DeviceInfo::new("a\u{7}", "", "", "").is_err());
/// assert_eq!(
///     DeviceInfo::new("", "Prusa\u{202E}4KM", "", "").unwrap_err(),
///     WireError::HiddenCharacter("model")
/// );
/// assert!(DeviceInfo::new("imprimante-é", "打印机 🖨", "", "").is_ok());
/// ```
#[derive(Clone, Deserialize)]
#[serde(try_from = "RawDeviceInfo")]
pub struct DeviceInfo {
    /// The four fields back to back.
    pub(super) text: InfoText,
    /// Where `hostname`, `model` and `agent` end in `text`.
    ends: [u16; 3],
    /// A hash of `text` and `ends`, kept inline so a server can tell an unchanged info from a
    /// changed one without reading the text.
    fingerprint: u64,
}

/// How many bytes of text a [`DeviceInfo`] holds inline. Most devices' four fields fit (an
/// OctoPrint or Klipper host's typically take 30–45 bytes); a server holding one per agent then
/// copies them into each discovery reply from the cache line it already read, rather than
/// chasing a pointer to a shared allocation. The size keeps `DeviceInfo` at 64 bytes.
const INLINE_INFO: usize = 46;

/// A [`DeviceInfo`]'s text: inline when short, else in one shared allocation (cloned without
/// copying). Which one depends only on the length, so equal texts have the same form.
#[derive(Clone)]
pub(super) enum InfoText {
    Inline { len: u8, bytes: [u8; INLINE_INFO] },
    Shared(std::sync::Arc<str>),
}

impl InfoText {
    fn new(text: &str) -> Self {
        match u8::try_from(text.len()) {
            Ok(len) if text.len() <= INLINE_INFO => {
                let mut bytes = [0u8; INLINE_INFO];
                bytes[..text.len()].copy_from_slice(text.as_bytes());
                Self::Inline { len, bytes }
            }
            _ => Self::Shared(std::sync::Arc::from(text)),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Self::Shared(text) => text.as_bytes(),
        }
    }

    /// The text in `start..end`, which were taken at char boundaries of a `str`.
    fn slice(&self, start: usize, end: usize) -> &str {
        match self {
            // Validates only the field read; cannot fail, as the bytes were copied from a `str`
            // and the bounds are char boundaries.
            Self::Inline { .. } => self
                .as_bytes()
                .get(start..end)
                .and_then(|field| std::str::from_utf8(field).ok())
                .unwrap_or_default(),
            Self::Shared(text) => text.get(start..end).unwrap_or_default(),
        }
    }
}

impl PartialEq for DeviceInfo {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
            && self.ends == other.ends
            && self.text.as_bytes() == other.text.as_bytes()
    }
}

impl Eq for DeviceInfo {}

impl std::hash::Hash for DeviceInfo {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.as_bytes().hash(state);
        self.ends.hash(state);
    }
}

impl Default for DeviceInfo {
    /// Four empty fields (equal to `DeviceInfo::new("", "", "", "")`).
    fn default() -> Self {
        Self::from_parts("", [0; 3])
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeviceInfo {
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    agent: String,
    #[serde(default)]
    agent_version: String,
}

impl TryFrom<RawDeviceInfo> for DeviceInfo {
    type Error = String;
    fn try_from(raw: RawDeviceInfo) -> Result<Self, String> {
        DeviceInfo::new(raw.hostname, raw.model, raw.agent, raw.agent_version).map_err(|err| {
            match err {
                WireError::BadField(name) => format!("bad field {name} "),
                WireError::HiddenCharacter(name) => format!("hidden char {name} "),
                _ => "malformed".to_owned(),
            }
        })
    }
}

impl Serialize for DeviceInfo {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = serializer.serialize_struct("DeviceInfo", 4)?;
        out.serialize_field("hostname", self.hostname())?;
        out.serialize_field("model", self.model())?;
        out.serialize_field("agent", self.agent())?;
        out.serialize_field("agent_version", self.agent_version())?;
        out.end()
    }
}

impl std::fmt::Debug for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceInfo")
            .field("hostname", &self.hostname())
            .field("model", &self.model())
            .field("agent", &self.agent())
            .field("agent_version", &self.agent_version())
            .finish()
    }
}

impl DeviceInfo {
    /// Checks each field against its limit ([`WireError::BadField`]) and for characters that
    /// [`is_hidden`] refuses ([`WireError::HiddenCharacter`]).
    ///
    /// ```
    /// use lanlink::{wire::{limits, WireError}, DeviceInfo};
    /// let info = DeviceInfo::new("octopi", "Ender 3", "octoprint-lanlink", "1.2.0")?;
    /// assert_eq!((info.model(), info.agent_version()), ("Ender 3", "1.2.0"));
    /// let long = "m".repeat(limits::MODEL + 1);
    /// assert_eq!(DeviceInfo::new("", long, "", ""), Err(WireError::BadField("model")));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(
        hostname: impl AsRef<str>,
        model: impl AsRef<str>,
        agent: impl AsRef<str>,
        agent_version: impl AsRef<str>,
    ) -> Result<Self, WireError> {
        let fields = [
            ("hostname", hostname.as_ref(), limits::HOSTNAME),
            ("model", model.as_ref(), limits::MODEL),
            ("agent", agent.as_ref(), limits::AGENT),
            (
                "agent_version",
                agent_version.as_ref(),
                limits::AGENT_VERSION,
            ),
        ];
        let mut text = String::with_capacity(fields.iter().map(|(_, v, _)| v.len()).sum());
        let mut ends = [0u16; 3];
        for (i, (name, value, limit)) in fields.into_iter().enumerate() {
            if value.len() > limit {
                return Err(WireError::BadField(name));
            }
            if value.chars().any(is_hidden) {
                return Err(WireError::HiddenCharacter(name));
            }
            text.push_str(value);
            if let Some(end) = ends.get_mut(i) {
                // Cannot overflow: the four limits add up to 413 bytes.
                *end = u16::try_from(text.len()).unwrap_or(u16::MAX);
            }
        }
        Ok(Self::from_parts(&text, ends))
    }

    /// The info of checked fields, back to back in `text`, ending at `ends`.
    fn from_parts(text: &str, ends: [u16; 3]) -> Self {
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            text.hash(&mut hasher);
            ends.hash(&mut hasher);
            hasher.finish()
        };
        Self {
            text: InfoText::new(text),
            ends,
            fingerprint,
        }
    }

    /// A 64-bit hash of the four fields (equal infos have equal fingerprints).
    ///
    /// ```
    /// use lanlink::DeviceInfo;
    /// let a = DeviceInfo::new("octopi", "MK4", "agent", "1.0")?;
    /// assert_eq!(a.fingerprint(), DeviceInfo::new("octopi", "MK4", "agent", "1.0")?.fingerprint());
    /// // The field boundaries count too, not only the text.
    /// assert_ne!(a.fingerprint(), DeviceInfo::new("octopiM", "K4", "agent", "1.0")?.fingerprint());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    fn field(&self, index: usize) -> &str {
        let start = match index {
            0 => 0,
            i => usize::from(self.ends[i - 1]),
        };
        let end = self
            .ends
            .get(index)
            .map_or(self.text.as_bytes().len(), |&e| usize::from(e));
        self.text.slice(start, end)
    }

    /// The device's host name.
    ///
    /// ```
    /// let info = lanlink::DeviceInfo::new("printer.local", "", "", "")?;
    /// assert_eq!(info.hostname(), "printer.local");
    /// assert_eq!(lanlink::DeviceInfo::default().hostname(), "");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn hostname(&self) -> &str {
        self.field(0)
    }
    /// The device model.
    ///
    /// ```
    /// let info = lanlink::DeviceInfo::new("", "Voron 2.4", "", "")?;
    /// assert_eq!(info.model(), "Voron 2.4");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn model(&self) -> &str {
        self.field(1)
    }
    /// The agent software's name.
    ///
    /// ```
    /// // A long info (past the inline size) reads back the same.
    /// let name = "a".repeat(64);
    /// let info = lanlink::DeviceInfo::new("h".repeat(200), "m", &name, "9")?;
    /// assert_eq!(info.agent(), name);
    /// assert_eq!(info.hostname().len(), 200);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn agent(&self) -> &str {
        self.field(2)
    }
    /// The agent software's version.
    ///
    /// ```
    /// let info: lanlink::DeviceInfo = serde_json::from_str(r#"{"agent_version":"2.0.1"}"#)?;
    /// assert_eq!(info.agent_version(), "2.0.1");
    /// assert_eq!(info.model(), "", "absent fields are empty");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn agent_version(&self) -> &str {
        self.field(3)
    }
}
