//! Who is visiting. A visitor is named by a `uid` cookie that this service issued and signed: a
//! random UUID v4 (122 random bits) and its MAC, `uid=<uuid>.<mac>`. A request without such a
//! cookie (none, or one that is forged, malformed or signed with another key) is a new visitor:
//! the page issues a fresh id, and the request itself counts as anonymous. So no one can act as
//! another reader by choosing their id, nor make up readers beyond one new id per request.
//!
//! Anonymous requests are told apart by their client: a pseudonym of the client's network address
//! (a keyed hash: the events never carry the address), with the address taken from
//! `X-Forwarded-For` only when the connection comes from a trusted proxy.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::header::SET_COOKIE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum_extra::extract::cookie::CookieJar;
use hmac::{Hmac, Mac};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::WebState;

pub const COOKIE: &str = "uid";
const ONE_YEAR_SECS: u64 = 365 * 24 * 60 * 60;
/// Bytes of the MAC kept in a cookie (128 bits), and of the hash that names a client (64 bits).
const COOKIE_MAC_BYTES: usize = 16;
const CLIENT_ID_BYTES: usize = 8;

/// Who is visiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visitor {
    /// The id from the signed `uid` cookie, or a fresh one that the page's response sets.
    pub uid: Uuid,
    /// No valid signed cookie came with the request: `uid` was made for it, and the request
    /// counts as anonymous.
    pub is_new: bool,
    /// The pseudonym of the client's address (see [`VisitorKeys::client_id`]), when known.
    pub client_id: Option<String>,
}

impl Visitor {
    /// The reader a search of this request belongs to: the visitor's id if its cookie was valid.
    pub fn user_id(&self) -> Option<Uuid> {
        (!self.is_new).then_some(self.uid)
    }
}

/// The keys and settings behind visitor ids: the MAC key (`web.cookie_secret`), whether the
/// cookie is `Secure`, and the proxies whose `X-Forwarded-For` is believed.
pub struct VisitorKeys {
    key: SecretString,
    secure: bool,
    trusted_proxies: Vec<IpNet>,
}

impl std::fmt::Debug for VisitorKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VisitorKeys")
            .field("secure", &self.secure)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish_non_exhaustive()
    }
}

impl VisitorKeys {
    pub fn new(key: SecretString, secure: bool, trusted_proxies: Vec<IpNet>) -> Self {
        Self {
            key,
            secure,
            trusted_proxies,
        }
    }

    /// HMAC-SHA256 of `data` under the key, for `purpose` (so that a MAC made for one use is
    /// never valid for another), as lower-case hex of its first `bytes` bytes.
    fn mac_hex(&self, purpose: &str, data: &[u8], bytes: usize) -> String {
        // HMAC takes a key of any length.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(self.key.expose_secret().as_bytes())
        else {
            return String::new();
        };
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(data);
        mac.finalize()
            .into_bytes()
            .iter()
            .take(bytes)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The cookie value naming `uid`: `<uuid>.<mac>`.
    pub fn cookie_value(&self, uid: Uuid) -> String {
        let uid = uid.hyphenated().to_string();
        let mac = self.mac_hex("uid", uid.as_bytes(), COOKIE_MAC_BYTES);
        format!("{uid}.{mac}")
    }

    /// The visitor id a cookie value names, if this service signed it.
    pub fn verify(&self, value: &str) -> Option<Uuid> {
        let (uid, mac) = value.split_once('.')?;
        // Only the canonical form was ever signed.
        let parsed = Uuid::parse_str(uid).ok().filter(|u| !u.is_nil())?;
        if parsed.hyphenated().to_string() != uid {
            return None;
        }
        let expected = self.mac_hex("uid", uid.as_bytes(), COOKIE_MAC_BYTES);
        (!expected.is_empty() && bool::from(expected.as_bytes().ct_eq(mac.as_bytes())))
            .then_some(parsed)
    }

    /// The token a form of this service carries for the visitor `uid`, made for `purpose` (one
    /// form's token is never valid for another): the first 128 bits of the HMAC of the purpose
    /// and the id, under the cookie key, in hex. A site that cannot read the page cannot make it.
    pub fn form_token(&self, purpose: &str, uid: Uuid) -> String {
        let purpose = format!("form:{purpose}");
        let uid = uid.hyphenated().to_string();
        self.mac_hex(&purpose, uid.as_bytes(), COOKIE_MAC_BYTES)
    }

    /// Whether `token` is [`form_token`](Self::form_token) of `purpose` and `uid` (compared in
    /// constant time).
    pub fn check_form_token(&self, purpose: &str, uid: Uuid, token: &str) -> bool {
        let expected = self.form_token(purpose, uid);
        !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(token.as_bytes()))
    }

    /// The hosts a request may name itself by: its `Host`, and, when the peer is a trusted proxy,
    /// each `X-Forwarded-Host` it passes on.
    pub fn request_hosts(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Vec<String> {
        let mut hosts: Vec<String> = headers
            .get(axum::http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(|h| h.trim().to_owned())
            .into_iter()
            .collect();
        if peer.is_some_and(|p| self.trusted(p.to_canonical())) {
            hosts.extend(
                headers
                    .get_all("x-forwarded-host")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .map(|h| h.trim().to_owned()),
            );
        }
        hosts.retain(|h| !h.is_empty());
        hosts
    }

    /// `Set-Cookie` for `uid`: a year, `HttpOnly`, `SameSite=Lax`, and `Secure` when the site is
    /// served over https.
    pub fn set_cookie(&self, uid: Uuid) -> Option<HeaderValue> {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{COOKIE}={}; Path=/; Max-Age={ONE_YEAR_SECS}; HttpOnly; SameSite=Lax{secure}",
            self.cookie_value(uid)
        ))
        .ok()
    }

    /// The pseudonym of a client address: `c-` and 16 hex digits of its keyed hash. An IPv6
    /// client is named by its /56, the block a home subscriber is commonly given whole (one
    /// person can hold many /64s).
    pub fn client_id(&self, address: IpAddr) -> String {
        let network = match address.to_canonical() {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets()[..7].to_vec(),
        };
        format!("c-{}", self.mac_hex("client", &network, CLIENT_ID_BYTES))
    }

    /// The client's address: the connection's peer, or, when the peer is a trusted proxy, the
    /// last address in `X-Forwarded-For` that is not one.
    pub fn client_address(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?.to_canonical();
        if !self.trusted(peer) {
            if headers.contains_key("x-forwarded-for") {
                untrusted_forward(peer);
            }
            return Some(peer);
        }
        // From the nearest hop back: each trusted proxy names the one before it.
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            // An address, or one with a port (`203.0.113.7:4711`, `[2001:db8::1]:4711`).
            let Some(address) = hop
                .parse::<IpAddr>()
                .ok()
                .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
            else {
                break;
            };
            client = address.to_canonical();
            if !self.trusted(client) {
                break;
            }
        }
        Some(client)
    }

    fn trusted(&self, address: IpAddr) -> bool {
        self.trusted_proxies
            .iter()
            .any(|net| net.contains(&address))
    }

    /// The visitor of a request with these headers, from this peer.
    pub fn visitor(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Visitor {
        let jar = CookieJar::from_headers(headers);
        let signed = jar.get(COOKIE).and_then(|c| self.verify(c.value()));
        let client_id = self
            .client_address(peer.map(|p| p.ip()), headers)
            .map(|address| self.client_id(address));
        match signed {
            Some(uid) => Visitor {
                uid,
                is_new: false,
                client_id,
            },
            None => Visitor {
                uid: Uuid::new_v4(),
                is_new: true,
                client_id,
            },
        }
    }
}

/// A peer that is not a trusted proxy sent `X-Forwarded-For`: almost always a proxy missing from
/// `web.trusted_proxies` (then every reader shares its address). Said at most every 10 minutes.
fn untrusted_forward(peer: IpAddr) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if (last == 0 || now >= last + 600)
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            %peer,
            "ignoring X-Forwarded-For from a peer that is not in web.trusted_proxies: if it is your \
             proxy, list it there, or every reader counts as this one address"
        );
    }
}

pub(crate) fn peer(parts_extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    parts_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
}

/// Gives every request a [`Visitor`], and every response to a new visitor a signed `uid`
/// cookie.
pub async fn ensure_uid(
    State(state): State<WebState>,
    mut request: Request,
    next: Next,
) -> Response {
    let visitor = state
        .visitors
        .visitor(request.headers(), peer(request.extensions()));
    request.extensions_mut().insert(visitor.clone());
    let mut response = next.run(request).await;
    if visitor.is_new {
        if let Some(cookie) = state.visitors.set_cookie(visitor.uid) {
            response.headers_mut().append(SET_COOKIE, cookie);
        }
    }
    response
}

impl FromRequestParts<WebState> for Visitor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &WebState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(visitor) = parts.extensions.get::<Visitor>() {
            return Ok(visitor.clone());
        }
        Ok(state
            .visitors
            .visitor(&parts.headers, peer(&parts.extensions)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(trusted: &[&str]) -> VisitorKeys {
        VisitorKeys::new(
            SecretString::from("k".repeat(32)),
            false,
            trusted.iter().map(|t| t.parse().unwrap()).collect(),
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn only_ids_this_service_signed_name_a_visitor() {
        let keys = keys(&[]);
        let uid = Uuid::new_v4();
        let value = keys.cookie_value(uid);
        assert_eq!(keys.verify(&value), Some(uid));
        let other = VisitorKeys::new(SecretString::from("o".repeat(32)), false, vec![]);
        assert_eq!(other.verify(&value), None, "another key");
        let forged = format!("{}.{}", Uuid::new_v4(), value.split_once('.').unwrap().1);
        for bad in [
            uid.to_string(),                     // unsigned, as cookies were before
            forged,                              // someone else's MAC
            format!("{value}0"),                 // MAC too long
            value[..value.len() - 1].to_owned(), // MAC too short
            value.to_uppercase(),                // not the canonical form
            format!("{}.{}", uid.simple(), value.split_once('.').unwrap().1),
            format!("urn:uuid:{uid}"),
            "{abc}".into(),
            String::new(),
            format!(
                "{}.{}",
                Uuid::nil(),
                keys.mac_hex("uid", Uuid::nil().to_string().as_bytes(), 16)
            ),
        ] {
            assert_eq!(keys.verify(&bad), None, "{bad}");
        }
    }

    #[test]
    fn a_request_without_a_valid_cookie_is_a_new_anonymous_visitor() {
        let keys = keys(&[]);
        let uid = Uuid::new_v4();
        let cookie = format!("uid={}", keys.cookie_value(uid));
        let known = keys.visitor(&headers(&[("cookie", &cookie)]), None);
        assert_eq!(
            (known.uid, known.is_new, known.user_id()),
            (uid, false, Some(uid))
        );
        let made_up = keys.visitor(&headers(&[("cookie", &format!("uid={uid}"))]), None);
        assert!(made_up.is_new);
        assert_ne!(made_up.uid, uid);
        assert_eq!(made_up.user_id(), None);
        let set = keys.set_cookie(made_up.uid).unwrap();
        let set = set.to_str().unwrap();
        assert!(set.starts_with(&format!("uid={}.", made_up.uid)), "{set}");
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax"));
        assert!(!set.contains("Secure"));
        let secure = VisitorKeys::new(SecretString::from("k".repeat(32)), true, vec![]);
        assert!(
            secure
                .set_cookie(uid)
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
    }

    #[test]
    fn form_tokens_are_bound_to_the_visitor_the_purpose_and_the_key() {
        let keys = keys(&[]);
        let uid = Uuid::new_v4();
        let token = keys.form_token("forget", uid);
        assert_eq!(token.len(), 32);
        assert!(keys.check_form_token("forget", uid, &token));
        assert!(
            !keys.check_form_token("forget", Uuid::new_v4(), &token),
            "another visitor"
        );
        assert!(!keys.check_form_token("other", uid, &token), "another form");
        let other = VisitorKeys::new(SecretString::from("o".repeat(32)), false, vec![]);
        assert!(
            !other.check_form_token("forget", uid, &token),
            "another key"
        );
        // The cookie's MAC is not a form token.
        let cookie_mac = keys.cookie_value(uid).split_once('.').unwrap().1.to_owned();
        assert!(!keys.check_form_token("forget", uid, &cookie_mac));
        for bad in [
            "",
            &token[..31],
            &token.to_uppercase(),
            &format!("{token}0"),
        ] {
            assert!(!keys.check_form_token("forget", uid, bad), "{bad:?}");
        }
    }

    #[test]
    fn a_request_names_its_host_and_trusted_proxies_the_forwarded_one() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let sent = headers(&[("host", "web:8000"), ("x-forwarded-host", "books.example")]);
        assert_eq!(keys(&[]).request_hosts(Some(peer), &sent), ["web:8000"]);
        assert_eq!(
            keys(&["10.0.0.0/8"]).request_hosts(Some(peer), &sent),
            ["web:8000", "books.example"]
        );
        assert!(keys(&[]).request_hosts(None, &HeaderMap::new()).is_empty());
    }

    #[test]
    fn clients_are_named_by_a_keyed_hash_of_their_address() {
        let keys = keys(&[]);
        let a = keys.client_id("203.0.113.7".parse().unwrap());
        assert_eq!(a.len(), 18);
        assert!(a.starts_with("c-") && a[2..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, keys.client_id("203.0.113.7".parse().unwrap()));
        assert_ne!(a, keys.client_id("203.0.113.8".parse().unwrap()));
        assert_eq!(
            a,
            keys.client_id("::ffff:203.0.113.7".parse().unwrap()),
            "an IPv4 address seen through IPv6"
        );
        assert_eq!(
            keys.client_id("2001:db8:1:2::1".parse().unwrap()),
            keys.client_id("2001:db8:1:ff:ffff::9".parse().unwrap()),
            "one /56"
        );
        assert_ne!(
            keys.client_id("2001:db8:1:2::1".parse().unwrap()),
            keys.client_id("2001:db8:1:102::1".parse().unwrap()),
            "another /56"
        );
        let other = VisitorKeys::new(SecretString::from("o".repeat(32)), false, vec![]);
        assert_ne!(a, other.client_id("203.0.113.7".parse().unwrap()));
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let forwarded = headers(&[("x-forwarded-for", "198.51.100.1, 203.0.113.7, 10.0.0.9")]);
        // Not trusted: the header is the client's own word.
        assert_eq!(keys(&[]).client_address(Some(peer), &forwarded), Some(peer));
        // Trusted: the last hop that is not a trusted proxy.
        let trusted = keys(&["10.0.0.0/8"]);
        assert_eq!(
            trusted.client_address(Some(peer), &forwarded),
            Some("203.0.113.7".parse().unwrap())
        );
        assert_eq!(
            trusted.client_address(Some(peer), &HeaderMap::new()),
            Some(peer)
        );
        let with_ports = headers(&[("x-forwarded-for", "203.0.113.7:4711, [2001:db8::1]:80")]);
        assert_eq!(
            trusted.client_address(Some(peer), &with_ports),
            Some("2001:db8::1".parse().unwrap())
        );
        let garbage = headers(&[("x-forwarded-for", "not an address")]);
        assert_eq!(trusted.client_address(Some(peer), &garbage), Some(peer));
        assert_eq!(trusted.client_address(None, &forwarded), None);
    }
}
