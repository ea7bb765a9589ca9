//! The trusted proxy of the browser pages (`auth.proxy_header`, `auth.proxy_cidrs`,
//! `auth.proxy_admins`, `auth.proxy_readers`): an authenticating proxy in front of the service
//! (oauth2-proxy and the like) names the signed-in person in a header. The header is believed
//! only on connections from the configured networks, and the name gets a role only when it is
//! listed; anything else is as if the header were absent.

use std::net::IpAddr;

use super::{AuthSettings, ConfigError, Role};

/// A network in CIDR notation (`10.0.0.0/8`, `::1/128`; a bare address is its own /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `text`; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or network (e.g. 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(net)), 32, self.prefix)
                    == masked(u128::from(u32::from(ip)), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), 128, self.prefix)
                    == masked(u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of a `width`-bit address.
fn masked(bits: u128, width: u32, prefix: u8) -> u128 {
    let keep = u32::from(prefix);
    if keep == 0 {
        0
    } else {
        bits >> (width - keep)
    }
}

/// The trusted proxy as configured and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxy {
    /// The header naming the signed-in person, lowercase (e.g. `x-forwarded-email`).
    pub header: String,
    /// Only connections from these networks may set it.
    pub cidrs: Vec<Cidr>,
    /// Names given the admin role.
    pub admins: Vec<String>,
    /// Names given the reader role.
    pub readers: Vec<String>,
}

impl TrustedProxy {
    /// Whether a connection from `peer` may name the person.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.cidrs.iter().any(|c| c.contains(peer))
    }

    /// The role of `name` (an admin may also read); `None` when it is in neither list.
    pub fn role_of(&self, name: &str) -> Option<Role> {
        let listed = |list: &[String]| list.iter().any(|n| n.eq_ignore_ascii_case(name));
        if listed(&self.admins) {
            Some(Role::Admin)
        } else if listed(&self.readers) {
            Some(Role::Reader)
        } else {
            None
        }
    }
}

fn invalid(key: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid(format!("{key}: {why}"))
}

/// An HTTP header name as RFC 9110 allows it (a token), not one the service itself relies on.
fn check_header(name: &str) -> Result<String, ConfigError> {
    let token = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(invalid(
            "auth.proxy_header",
            format!("{name:?} is not an HTTP header name (e.g. X-Forwarded-Email)"),
        ));
    }
    let lower = name.to_ascii_lowercase();
    if [
        "authorization",
        "cookie",
        "host",
        "content-type",
        "content-length",
    ]
    .contains(&lower.as_str())
    {
        return Err(invalid(
            "auth.proxy_header",
            format!("{name} carries something else; use the header your proxy sets for the user (e.g. X-Forwarded-Email)"),
        ));
    }
    Ok(lower)
}

impl AuthSettings {
    /// The trusted proxy, checked: `None` when `auth.proxy_header` is empty. A header without
    /// networks or without any name mapped to a role, a malformed network, a name in both lists,
    /// or a list set without a header is an error naming its key.
    pub fn trusted_proxy(&self) -> Result<Option<TrustedProxy>, ConfigError> {
        let header = self.proxy_header.trim();
        if header.is_empty() {
            for (key, set) in [
                ("auth.proxy_cidrs", !self.proxy_cidrs.is_empty()),
                ("auth.proxy_admins", !self.proxy_admins.is_empty()),
                ("auth.proxy_readers", !self.proxy_readers.is_empty()),
            ] {
                if set {
                    return Err(invalid(
                        key,
                        "is set but auth.proxy_header is empty: name the header your proxy sets \
                         (e.g. X-Forwarded-Email), or remove the key",
                    ));
                }
            }
            return Ok(None);
        }
        let header = check_header(header)?;
        if self.proxy_cidrs.is_empty() {
            return Err(invalid(
                "auth.proxy_cidrs",
                "must list the proxy's networks when auth.proxy_header is set (anyone else could \
                 send the header): e.g. [\"10.0.0.0/8\"]",
            ));
        }
        let cidrs = self
            .proxy_cidrs
            .iter()
            .map(|c| Cidr::parse(c).map_err(|e| invalid("auth.proxy_cidrs", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let names = |key: &str, list: &[String]| -> Result<Vec<String>, ConfigError> {
            list.iter()
                .map(|n| {
                    let n = n.trim();
                    if n.is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control) {
                        Err(invalid(
                            key,
                            format!("{n:?} must be 1 to 100 printable characters"),
                        ))
                    } else {
                        Ok(n.to_owned())
                    }
                })
                .collect()
        };
        let admins = names("auth.proxy_admins", &self.proxy_admins)?;
        let readers = names("auth.proxy_readers", &self.proxy_readers)?;
        if admins.is_empty() && readers.is_empty() {
            return Err(invalid(
                "auth.proxy_admins",
                "auth.proxy_header is set but no name is mapped to a role: list the people in \
                 auth.proxy_admins or auth.proxy_readers",
            ));
        }
        if let Some(both) = admins
            .iter()
            .find(|a| readers.iter().any(|r| r.eq_ignore_ascii_case(a)))
        {
            return Err(invalid(
                "auth.proxy_readers",
                format!("{both:?} is also in auth.proxy_admins: list each name once"),
            ));
        }
        Ok(Some(TrustedProxy {
            header,
            cidrs,
            admins,
            readers,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_network_contains_the_addresses_under_its_prefix() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped");
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("192.0.2.1")) && !all.contains(ip("::2")));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
    }

    #[test]
    fn a_malformed_network_is_refused_with_what_is_wrong() {
        assert!(Cidr::parse("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(Cidr::parse("ten/8")
            .unwrap_err()
            .contains("not an IP address"));
        assert!(Cidr::parse("::/129").unwrap_err().contains("0 to 128"));
    }

    fn settings(toml: &str) -> Result<Option<TrustedProxy>, ConfigError> {
        crate::config::Settings::from_toml(toml).map(|s| s.auth.trusted_proxy().unwrap())
    }

    #[test]
    fn the_proxy_settings_are_checked_at_load_naming_the_key() {
        let err = |toml: &str| settings(toml).unwrap_err().to_string();
        assert!(
            err("[auth]\nproxy_header = \"X-Forwarded-Email\"\nproxy_admins = [\"a\"]")
                .contains("auth.proxy_cidrs")
        );
        assert!(
            err("[auth]\nproxy_cidrs = [\"10.0.0.0/8\"]").contains("auth.proxy_header is empty")
        );
        assert!(
            err("[auth]\nproxy_header = \"X-User\"\nproxy_cidrs = [\"10.0.0.0/8\"]")
                .contains("no name is mapped")
        );
        assert!(err("[auth]\nproxy_header = \"X User\"\nproxy_cidrs = [\"10.0.0.0/8\"]\nproxy_readers = [\"b\"]")
            .contains("not an HTTP header name"));
        assert!(err("[auth]\nproxy_header = \"Authorization\"\nproxy_cidrs = [\"10.0.0.0/8\"]\nproxy_readers = [\"b\"]")
            .contains("auth.proxy_header"));
        assert!(err("[auth]\nproxy_header = \"X-User\"\nproxy_cidrs = [\"10.0.0.0/40\"]\nproxy_readers = [\"b\"]")
            .contains("auth.proxy_cidrs"));
        assert!(err("[auth]\nproxy_header = \"X-User\"\nproxy_cidrs = [\"10.0.0.0/8\"]\nproxy_readers = [\"b\"]\nproxy_admins = [\"B\"]")
            .contains("also in auth.proxy_admins"));
        let ok = settings(
            "[auth]\nproxy_header = \"X-Forwarded-Email\"\nproxy_cidrs = [\"10.0.0.0/8\"]\n\
             proxy_admins = [\"alice@example.com\"]\nproxy_readers = [\"bob@example.com\"]",
        )
        .unwrap()
        .unwrap();
        assert_eq!(ok.header, "x-forwarded-email");
        assert!(ok.trusts(ip("10.3.4.5")) && !ok.trusts(ip("192.0.2.1")));
        assert_eq!(ok.role_of("Alice@example.com"), Some(Role::Admin));
        assert_eq!(ok.role_of("bob@example.com"), Some(Role::Reader));
        assert_eq!(ok.role_of("mallory@example.com"), None);
        assert_eq!(settings("").unwrap(), None);
    }
}
