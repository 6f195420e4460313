//! The value types settings are parsed into: secrets that never print,
//! URLs checked when the settings are read, and lists that may also be
//! given as one comma-separated string (handy in an environment variable).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// A secret string: never printed, never logged.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A server's URL, parsed when the settings are read. Its password, if it
/// has one, is never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServerUrl(url::Url);

impl ServerUrl {
    pub fn scheme(&self) -> &str {
        self.0.scheme()
    }

    /// The URL as given, credentials included: for the client that
    /// connects, never for a log line.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// Whether the scheme is one of `schemes`.
    pub fn is(&self, schemes: &[&str]) -> bool {
        schemes.contains(&self.scheme())
    }
}

impl TryFrom<String> for ServerUrl {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        url::Url::parse(&value).map(Self).map_err(|e| format!("not a URL ({e})"))
    }
}

impl std::str::FromStr for ServerUrl {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        Self::try_from(value.to_owned())
    }
}

impl From<ServerUrl> for String {
    fn from(url: ServerUrl) -> Self {
        url.0.into()
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.password().is_none() {
            return f.write_str(self.0.as_str());
        }
        let mut shown = self.0.clone();
        // Only fails for URLs that cannot have a password, which this has.
        let _ = shown.set_password(Some("***"));
        f.write_str(shown.as_str())
    }
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerUrl({self})")
    }
}

/// A list given as a list, or as one string with commas between the items
/// (`SURGE_SHARED__URLS=redis://a:6379,redis://b:6379`).
pub fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + TryFrom<String>,
    <T as TryFrom<String>>::Error: fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrJoined<T> {
        List(Vec<T>),
        Joined(String),
    }
    match ListOrJoined::<T>::deserialize(deserializer)? {
        ListOrJoined::List(items) => Ok(items),
        ListOrJoined::Joined(joined) => joined
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| T::try_from(item.to_owned()).map_err(serde::de::Error::custom))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_a_url_is_never_printed() {
        let url = ServerUrl::try_from("postgres://surge:hunter2@db:5432/surge".to_owned()).expect("url");
        assert_eq!(url.to_string(), "postgres://surge:***@db:5432/surge");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert_eq!(url.expose(), "postgres://surge:hunter2@db:5432/surge");
    }

    #[test]
    fn the_secret_is_never_printed() {
        let secret = Secret::new("x".repeat(40));
        assert_eq!(format!("{secret:?}"), "Secret(***)");
    }
}
