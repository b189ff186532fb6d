//! Image references as Docker and the kubelet parse them: `[registry/]repository[:tag][@digest]`.
//! The first path component is a registry when it has a `.` or a `:` or is `localhost`;
//! a reference without one names the cluster's own registry (as k3s's registry mirrors
//! resolve them). No tag and no digest means `:latest`.

use std::fmt;

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `host[:port]`, or None for the cluster's registry.
    pub registry: Option<String>,
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

/// Why a reference does not parse; the text is the kubelet's ("invalid reference format").
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("couldn't parse image name {0:?}: invalid reference format")]
pub struct InvalidReference(pub String);

impl Reference {
    pub fn parse(text: &str) -> Result<Self, InvalidReference> {
        let invalid = || InvalidReference(text.to_string());
        if text.is_empty() || text.len() > 4096 || text.trim() != text {
            return Err(invalid());
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                let hex = digest.strip_prefix("sha256:").ok_or_else(invalid)?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                    return Err(invalid());
                }
                (rest, Some(digest.to_string()))
            }
            None => (text, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(rest[slash + i + 1..].to_string())),
            None => (rest, None),
        };
        if tag.as_deref().is_some_and(|tag| !valid_tag(tag)) {
            return Err(invalid());
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (Some(first.to_string()), rest)
            }
            _ => (None, name),
        };
        if let Some(host) = &registry {
            if !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')) {
                return Err(invalid());
            }
        }
        if !valid_repository(repository) {
            return Err(invalid());
        }
        Ok(Reference { registry, repository: repository.to_string(), tag, digest })
    }

    /// The tag or digest to ask a registry for: the digest when there is one.
    pub fn manifest_reference(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}` (the distribution spec's tag grammar).
pub fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && tag.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `path-component ('/' path-component)*`, each `[a-z0-9]+ (separator [a-z0-9]+)*` where a
/// separator is `.`, `_`, `__` or `-`+ (the distribution spec's grammar), 255 bytes at most.
pub fn valid_repository(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|part| {
            let bytes = part.as_bytes();
            let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            if bytes.is_empty() || !alnum(&bytes[0]) || !alnum(&bytes[bytes.len() - 1]) {
                return false;
            }
            let mut separators = String::new();
            for &b in bytes {
                if alnum(&b) {
                    if !matches!(separators.as_str(), "" | "." | "_" | "__") && !separators.bytes().all(|s| s == b'-') {
                        return false;
                    }
                    separators.clear();
                } else if matches!(b, b'.' | b'_' | b'-') {
                    separators.push(b as char);
                } else {
                    return false;
                }
            }
            true
        })
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(registry) = &self.registry {
            write!(f, "{registry}/")?;
        }
        f.write_str(&self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_as_docker_parses_them() {
        let r = Reference::parse("hello:v1").unwrap();
        assert_eq!((r.registry, r.repository.as_str(), r.tag.as_deref()), (None, "hello", Some("v1")));
        let r = Reference::parse("127.0.0.1:5000/team/app").unwrap();
        assert_eq!(r.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!((r.repository.as_str(), r.tag.as_deref()), ("team/app", None));
        assert_eq!(r.to_string(), "127.0.0.1:5000/team/app");
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("localhost/app:1@{digest}")).unwrap();
        assert_eq!(r.manifest_reference(), digest);
        assert_eq!(Reference::parse("library/nginx").unwrap().registry, None);
        for bad in ["", "Hello", "app:", "app:-x", "a//b", "app@sha256:12", "a b", "-a", "a..b", "app:v1 "] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(valid_repository("a__b/c-d.e"));
        assert!(valid_repository("a---b"));
        assert!(!valid_repository("a___b"));
    }
}
