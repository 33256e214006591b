//! The server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL runs
//! it, working from the stored keys alone.
//!
//! The server keeps `StoredKey = H(HMAC(SaltedPassword, "Client Key"))` and
//! `ServerKey = HMAC(SaltedPassword, "Server Key")`. A client proves that it
//! knows `ClientKey` (whose hash is `StoredKey`); the server proves that it
//! knows `ServerKey`. Neither key is enough to compute a client proof, so a
//! stolen verifier cannot log in, unlike the salted password it is made from.
//!
//! Over TLS the server also offers `SCRAM-SHA-256-PLUS` with channel binding
//! type `tls-server-end-point` (RFC 5929: the hash of the server's
//! certificate), as PostgreSQL does: the client's proof then covers the
//! certificate it saw, so a man in the middle holding another certificate
//! cannot relay the login (libpq's `channel_binding=require`). Without TLS
//! only `SCRAM-SHA-256` is offered and a client asking for binding (`p=`) is
//! refused; `y` (the client could bind but thinks the server cannot) is
//! refused when binding was offered, since only a downgrade explains it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::{digest, hmac};

/// The mechanism name clients choose.
pub(crate) const MECHANISM: &str = "SCRAM-SHA-256";

/// The mechanism with channel binding, offered over TLS.
pub(crate) const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// The only channel binding type offered (PostgreSQL's too).
const BINDING_TYPE: &str = "tls-server-end-point";

/// What the server offered and what the client chose.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Binding<'a> {
    /// No TLS, or no binding data: plain SCRAM-SHA-256 only.
    NotOffered,
    /// Offered (these are the server's `tls-server-end-point` data), but the
    /// client chose plain SCRAM-SHA-256.
    Declined,
    /// The client chose SCRAM-SHA-256-PLUS.
    Chosen(&'a [u8]),
}

/// Length of SHA-256 output, and so of every key.
pub(crate) const KEY_LEN: usize = 32;

/// What the server keeps of a password.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct StoredKeys {
    pub(crate) iterations: u32,
    pub(crate) salt: Vec<u8>,
    pub(crate) stored_key: [u8; KEY_LEN],
    pub(crate) server_key: [u8; KEY_LEN],
}

impl std::fmt::Debug for StoredKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys allow guessing the password offline: kept out of logs.
        f.debug_struct("StoredKeys")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; KEY_LEN] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message);
    let mut out = [0; KEY_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

fn sha256(message: &[u8]) -> [u8; KEY_LEN] {
    let mut out = [0; KEY_LEN];
    out.copy_from_slice(digest::digest(&digest::SHA256, message).as_ref());
    out
}

impl StoredKeys {
    /// The keys derived from a salted password (`Hi(password, salt, i)`).
    pub(crate) fn from_salted_password(
        iterations: u32,
        salt: Vec<u8>,
        salted_password: &[u8],
    ) -> StoredKeys {
        StoredKeys {
            iterations,
            salt,
            stored_key: sha256(&hmac_sha256(salted_password, b"Client Key")),
            server_key: hmac_sha256(salted_password, b"Server Key"),
        }
    }
}

/// Why an exchange failed. Both end the login with the same message; the
/// distinction is for the log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ScramError {
    /// The client's message does not follow the protocol.
    Malformed(String),
    /// The proof does not match: a wrong password, or an unknown user.
    WrongProof,
}

fn malformed(what: &str) -> ScramError {
    ScramError::Malformed(what.to_string())
}

/// The exchange after the server's first message, waiting for the client's
/// final message.
pub(crate) struct AwaitingProof {
    keys: StoredKeys,
    /// What the client's final `c=` must hold: the GS2 header, followed by
    /// the channel binding data when bound.
    binding: Vec<u8>,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// Answers the client's first message (`n,,n=,r=<client nonce>`) with the
/// salt, the iteration count and the combined nonce.
pub(crate) fn server_first(
    client_first: &[u8],
    keys: StoredKeys,
    binding: Binding<'_>,
) -> Result<(String, AwaitingProof), ScramError> {
    let text = std::str::from_utf8(client_first).map_err(|_| malformed("not UTF-8"))?;
    let (flag, rest) = text
        .split_once(',')
        .ok_or_else(|| malformed("no GS2 header"))?;
    let bound = match (flag, binding) {
        ("n", Binding::NotOffered | Binding::Declined) | ("y", Binding::NotOffered) => None,
        ("y", _) => {
            return Err(malformed(
                "the client thinks the server cannot bind the channel, yet it offered to (a downgrade?)",
            ));
        }
        (f, Binding::Chosen(data)) if f.strip_prefix("p=") == Some(BINDING_TYPE) => Some(data),
        (f, Binding::Chosen(_)) if f.starts_with("p=") => {
            return Err(malformed("unsupported channel binding type"));
        }
        (_, Binding::Chosen(_)) => {
            return Err(malformed("SCRAM-SHA-256-PLUS without channel binding"));
        }
        (f, _) if f.starts_with("p=") => {
            return Err(malformed(
                "channel binding was not offered (connect with sslmode=require, or channel_binding=prefer)",
            ));
        }
        _ => return Err(malformed("bad channel binding flag")),
    };
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or_else(|| malformed("no GS2 header"))?;
    if !authzid.is_empty() {
        return Err(malformed("authorization identities are not supported"));
    }
    let mut fields = bare.split(',');
    // PostgreSQL ignores the SCRAM user name (libpq sends it empty): the
    // startup message names the user.
    match fields.next() {
        Some(user) if user.starts_with("n=") => {}
        Some(m) if m.starts_with("m=") => return Err(malformed("mandatory extensions")),
        _ => return Err(malformed("no user name attribute")),
    }
    let client_nonce = fields
        .next()
        .and_then(|f| f.strip_prefix("r="))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b)))
        .ok_or_else(|| malformed("no client nonce"))?;
    let server_nonce: [u8; 18] = rand::random();
    let nonce = format!("{client_nonce}{}", STANDARD.encode(server_nonce));
    let server_first = format!(
        "r={nonce},s={},i={}",
        STANDARD.encode(&keys.salt),
        keys.iterations
    );
    let mut expected = text.as_bytes()[..text.len() - bare.len()].to_vec();
    expected.extend_from_slice(bound.unwrap_or_default());
    Ok((
        server_first.clone(),
        AwaitingProof {
            keys,
            binding: expected,
            client_first_bare: bare.to_string(),
            server_first,
            nonce,
        },
    ))
}

impl AwaitingProof {
    /// Checks the client's proof; on success, the server's final message
    /// (`v=<server signature>`).
    pub(crate) fn verify(&self, client_final: &[u8]) -> Result<String, ScramError> {
        let text = std::str::from_utf8(client_final).map_err(|_| malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| malformed("no proof"))?;
        let mut fields = without_proof.split(',');
        let binding = fields
            .next()
            .and_then(|f| f.strip_prefix("c="))
            .and_then(|c| STANDARD.decode(c).ok())
            .ok_or_else(|| malformed("no channel binding attribute"))?;
        if binding != self.binding {
            return Err(malformed(
                "channel binding does not match the first message",
            ));
        }
        if fields.next().and_then(|f| f.strip_prefix("r=")) != Some(self.nonce.as_str()) {
            return Err(malformed("nonce does not match"));
        }
        let proof = STANDARD
            .decode(proof)
            .ok()
            .filter(|p| p.len() == KEY_LEN)
            .ok_or_else(|| malformed("bad proof"))?;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let client_signature = hmac_sha256(&self.keys.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; KEY_LEN];
        for (k, (p, s)) in client_key
            .iter_mut()
            .zip(proof.iter().zip(client_signature.iter()))
        {
            *k = p ^ s;
        }
        if !equal_in_constant_time(&sha256(&client_key), &self.keys.stored_key) {
            return Err(ScramError::WrongProof);
        }
        let server_signature = hmac_sha256(&self.keys.server_key, auth_message.as_bytes());
        Ok(format!("v={}", STANDARD.encode(server_signature)))
    }
}

fn equal_in_constant_time(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgwire::api::auth::sasl::scram::gen_salted_password;

    /// The client side, as RFC 5802 computes it, for the tests.
    fn client_final(password: &str, client_first_bare: &str, server_first: &str) -> String {
        client_final_with(password, client_first_bare, server_first, "biws")
    }

    /// As [`client_final`], with `c=` (base64 of the GS2 header and any
    /// channel binding data) given.
    fn client_final_with(
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        channel: &str,
    ) -> String {
        let mut attrs = server_first.split(',');
        let nonce = attrs.next().unwrap().strip_prefix("r=").unwrap();
        let salt = STANDARD
            .decode(attrs.next().unwrap().strip_prefix("s=").unwrap())
            .unwrap();
        let iterations: usize = attrs
            .next()
            .unwrap()
            .strip_prefix("i=")
            .unwrap()
            .parse()
            .unwrap();
        let salted = gen_salted_password(password, &salt, iterations);
        let client_key = hmac_sha256(&salted, b"Client Key");
        let without_proof = format!("c={channel},r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac_sha256(&sha256(&client_key), auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(a, b)| a ^ b)
            .collect();
        format!("{without_proof},p={}", STANDARD.encode(proof))
    }

    fn keys(password: &str) -> StoredKeys {
        let salt = b"0123456789abcdef".to_vec();
        let salted = gen_salted_password(password, &salt, 4096);
        StoredKeys::from_salted_password(4096, salt, &salted)
    }

    #[test]
    fn the_right_password_logs_in_and_the_server_proves_itself() {
        let (first, waiting) =
            server_first(b"n,,n=,r=abcdef", keys("pencil"), Binding::NotOffered).unwrap();
        assert!(first.starts_with("r=abcdef"), "{first}");
        let reply = client_final("pencil", "n=,r=abcdef", &first);
        let v = waiting.verify(reply.as_bytes()).unwrap();
        assert!(v.starts_with("v="));
        let wrong = client_final("pen", "n=,r=abcdef", &first);
        assert_eq!(
            waiting.verify(wrong.as_bytes()),
            Err(ScramError::WrongProof)
        );
    }

    #[test]
    fn rfc7677_example_verifies() {
        // RFC 7677 section 3: user "user", password "pencil".
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = gen_salted_password("pencil", &salt, 4096);
        let keys = StoredKeys::from_salted_password(4096, salt, &salted);
        let waiting = AwaitingProof {
            keys,
            binding: b"n,,".to_vec(),
            client_first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
            server_first: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".into(),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
        };
        let final_message = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            waiting.verify(final_message.as_bytes()).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn malformed_messages_are_refused_without_panics() {
        for bad in [
            &b""[..],
            b"n",
            b"n,",
            b"x,,n=,r=a",
            b"p=tls-server-end-point,,n=,r=a",
            b"n,a=someone,n=,r=a",
            b"n,,m=x,n=,r=a",
            b"n,,n=",
            b"n,,n=,r=",
            b"n,,n=,r=a b",
            b"\xff,,",
        ] {
            assert!(
                matches!(
                    server_first(bad, keys("x"), Binding::NotOffered),
                    Err(ScramError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        let (_, waiting) = server_first(b"n,,n=,r=abc", keys("x"), Binding::NotOffered).unwrap();
        for bad in [
            &b""[..],
            b"c=biws",
            b"c=biws,r=abc,p=AAAA",
            b"c=eSws,r=abc,p=AAAA",
            b"c=biws,r=other,p=AAAA",
            b"\xff",
        ] {
            assert!(
                matches!(waiting.verify(bad), Err(ScramError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn channel_binding_covers_the_certificate_seen() {
        let cert_hash = [7u8; 32];
        let gs2 = "p=tls-server-end-point,,";
        let first_message = format!("{gs2}n=,r=abc");
        let (first, waiting) = server_first(
            first_message.as_bytes(),
            keys("pw"),
            Binding::Chosen(&cert_hash),
        )
        .unwrap();
        let bound = |data: &[u8]| {
            let c = STANDARD.encode([gs2.as_bytes(), data].concat());
            client_final_with("pw", "n=,r=abc", &first, &c)
        };
        assert!(waiting.verify(bound(&cert_hash).as_bytes()).is_ok());
        // The certificate of a man in the middle, or no binding data.
        for seen in [&[8u8; 32][..], &[]] {
            assert!(matches!(
                waiting.verify(bound(seen).as_bytes()),
                Err(ScramError::Malformed(_))
            ));
        }
        // Offered over TLS: a client that says "y" was downgraded; plain
        // SCRAM ("n") is still fine; PLUS without binding is not.
        for (message, binding) in [
            (&b"y,,n=,r=a"[..], Binding::Declined),
            (b"n,,n=,r=a", Binding::Chosen(&cert_hash)),
            (b"p=tls-unique,,n=,r=a", Binding::Chosen(&cert_hash)),
            (b"p=tls-server-end-point,,n=,r=a", Binding::Declined),
        ] {
            assert!(
                matches!(
                    server_first(message, keys("x"), binding),
                    Err(ScramError::Malformed(_))
                ),
                "{message:?}"
            );
        }
        assert!(server_first(b"n,,n=,r=a", keys("x"), Binding::Declined).is_ok());
    }
}
