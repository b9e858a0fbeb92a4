//! Redis key names for a token: a hash of everything that makes the token different, so that a key
//! names no secret and replicas with the same provider settings meet on the same key.

use sha2::{Digest, Sha256};

use crate::config::{Endpoint, Provider};
use crate::token::TokenKey;

/// The Redis keys of one token: its sealed value and the lock that elects its fetcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisKeys {
    pub value: String,
    pub lock: String,
}

/// Derives the keys from the provider's endpoint, client_id and params and the token's audience,
/// scope and resource. The provider's local name is left out (replicas may name it differently);
/// the secret is left out (a rotated secret keeps the token).
pub fn derive(prefix: &str, provider: &Provider, key: &TokenKey) -> RedisKeys {
    let mut h = Sha256::new();
    let mut field = |tag: &str, value: Option<&str>| {
        // Length-prefixed, and absent told apart from empty, so that no two inputs collide.
        h.update(tag.as_bytes());
        match value {
            None => h.update([0u8]),
            Some(v) => {
                h.update([1u8]);
                h.update((v.len() as u64).to_be_bytes());
                h.update(v.as_bytes());
            }
        }
    };
    field("tokenproxy-shared-token-v1", None);
    match &provider.endpoint {
        Endpoint::TokenUrl(url) => field("token_url", Some(url.as_str())),
        // Replicas that name the IdP by its issuer share by the issuer: they discover the same
        // token endpoint.
        Endpoint::Issuer(issuer) => field("issuer", Some(&issuer.id)),
    }
    field("client_id", Some(&provider.client_id));
    field("audience", key.audience.as_deref());
    field("scope", key.scope.as_deref());
    field("resource", key.resource.as_deref());
    for (k, v) in &provider.params {
        field("param", Some(k));
        field("value", Some(v));
    }
    let digest = h.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    RedisKeys {
        value: format!("{prefix}token:{hex}"),
        lock: format!("{prefix}lock:{hex}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config(extra_provider: &str, token: &str) -> (Config, TokenKey) {
        let yaml = format!(
            "providers:\n  p:\n    token_url: https://idp.example/oauth/token\n    client_id: cid\n    client_secret: s3cret\n{extra_provider}routes:\n  - name: r\n    listen: 127.0.0.1:8081\n    upstream: http://127.0.0.1:9\n    token: {{ provider: p{token} }}\n"
        );
        let c = Config::from_yaml(&yaml, &|_| None).unwrap();
        let k = c.routes[0].token.clone().unwrap();
        (c, k)
    }

    fn keys(extra_provider: &str, token: &str) -> RedisKeys {
        let (c, k) = config(extra_provider, token);
        derive("tp:", &c.providers["p"], &k)
    }

    #[test]
    fn every_token_property_changes_the_key_and_nothing_else_does() {
        let base = keys("", ", audience: a");
        assert!(base.value.starts_with("tp:token:") && base.lock.starts_with("tp:lock:"));
        assert_eq!(base.value.len(), "tp:token:".len() + 64);
        assert_eq!(
            base.value["tp:token:".len()..],
            base.lock["tp:lock:".len()..]
        );
        let different = [
            keys("", ", audience: b"),
            keys("", ""),
            keys("", ", audience: a, scope: s"),
            keys("", ", audience: a, resource: r"),
            keys("    params: { organization: o1 }\n", ", audience: a"),
        ];
        for (i, d) in different.iter().enumerate() {
            assert_ne!(d.value, base.value, "case {i}");
        }
        assert_ne!(
            keys("    params: { organization: o1 }\n", ", audience: a"),
            keys("    params: { organization: o2 }\n", ", audience: a")
        );
        // The secret and the request encoding do not make another token.
        let (c, k) = config("    auth_method: client_secret_basic\n", ", audience: a");
        assert_eq!(derive("tp:", &c.providers["p"], &k), base);
        assert!(!base.value.contains("s3cret") && !base.value.contains("cid"));
    }

    #[test]
    fn endpoint_and_client_id_change_the_key() {
        let (c, k) = config("", ", audience: a");
        let base = derive("tp:", &c.providers["p"], &k);
        let mut p = (*c.providers["p"]).clone();
        p.client_id = "other".into();
        assert_ne!(derive("tp:", &p, &k), base);
        let mut p = (*c.providers["p"]).clone();
        p.endpoint = Endpoint::TokenUrl("https://other.example/oauth/token".parse().unwrap());
        assert_ne!(derive("tp:", &p, &k), base);
        // Absent and empty are different inputs.
        let mut k2 = k.clone();
        k2.scope = Some(String::new());
        assert_ne!(derive("tp:", &c.providers["p"], &k2), base);
    }
}
