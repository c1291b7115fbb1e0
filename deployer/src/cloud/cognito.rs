//! A stage's users, in its Cognito user pool: add (with a permanent password), remove, list,
//! and sign in with SRP, the flow the app client allows, so a password never leaves the
//! machine that signs in (only a proof that it is known).
//!
//! The SRP arithmetic is Cognito's: the 3072-bit group of RFC 5054 with generator 2, SHA-256,
//! and the password claim signed with a key derived by HKDF ("Caldera Derived Key").

use std::time::SystemTime;

use aws_sdk_cognitoidentityprovider::Client;
use aws_sdk_cognitoidentityprovider::types::{
    AttributeType, AuthFlowType, ChallengeNameType, ExplicitAuthFlowsType, MessageActionType,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use num_bigint::BigUint;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::cloud::error::chain;

/// The stage's pool and its app client, from the stack's outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub id: String,
    pub client_id: String,
}

#[derive(Debug, Error)]
pub enum UserError {
    #[error("wrong email or password for {0}")]
    NotAuthorized(String),
    #[error("the pool refused the password: {0}")]
    InvalidPassword(String),
    #[error("no user {0} in this stage's pool")]
    NoSuchUser(String),
    #[error("sign-in asked for {0}, which this tool does not answer")]
    Challenge(String),
    #[error("sign-in failed: {0}")]
    Protocol(String),
    #[error("{action}: {message}")]
    Sdk {
        action: &'static str,
        message: String,
    },
}

fn sdk<E: std::error::Error + 'static>(action: &'static str, e: &E) -> UserError {
    UserError::Sdk {
        action,
        message: chain(e),
    }
}

/// A user as `user list` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserSummary {
    pub email: String,
    /// Cognito's status: `CONFIRMED`, `FORCE_CHANGE_PASSWORD`, …
    pub status: String,
    pub enabled: bool,
    /// The `sub`: the owner of the user's images.
    pub sub: String,
}

/// What a sign-in returns.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access_token: String,
    pub id_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: i32,
}

/// Adds `email` with `password` as a permanent password, so they can sign in at once; a user
/// who exists gets the password set again. Returns whether the user is new.
pub async fn add_user(
    cognito: &Client,
    pool: &Pool,
    email: &str,
    password: &str,
) -> Result<bool, UserError> {
    let attr = |name: &str, value: &str| {
        AttributeType::builder()
            .name(name)
            .value(value)
            .build()
            .map_err(|e| UserError::Protocol(e.to_string()))
    };
    let created = cognito
        .admin_create_user()
        .user_pool_id(&pool.id)
        .username(email)
        .user_attributes(attr("email", email)?)
        .user_attributes(attr("email_verified", "true")?)
        .message_action(MessageActionType::Suppress)
        .send()
        .await;
    let new = match created {
        Ok(_) => true,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_username_exists_exception()) =>
        {
            false
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_invalid_parameter_exception()) =>
        {
            return Err(UserError::InvalidPassword(chain(&e)));
        }
        Err(e) => return Err(sdk("AdminCreateUser", &e)),
    };
    cognito
        .admin_set_user_password()
        .user_pool_id(&pool.id)
        .username(email)
        .password(password)
        .permanent(true)
        .send()
        .await
        .map_err(|e| match e.as_service_error() {
            Some(s) if s.is_invalid_password_exception() => {
                UserError::InvalidPassword(s.meta().message().unwrap_or("").to_string())
            }
            _ => sdk("AdminSetUserPassword", &e),
        })?;
    Ok(new)
}

/// A user pool of its own with one public app client (SRP and refresh only), outside any
/// stack: the local end-to-end test's "another pool". Delete it with [`delete_pool`].
pub async fn create_pool(cognito: &Client, name: &str) -> Result<Pool, UserError> {
    let pool = cognito
        .create_user_pool()
        .pool_name(name)
        .send()
        .await
        .map_err(|e| sdk("CreateUserPool", &e))?;
    let id = pool
        .user_pool()
        .and_then(|p| p.id())
        .ok_or_else(|| UserError::Protocol("CreateUserPool answered no pool id".into()))?
        .to_string();
    let client = cognito
        .create_user_pool_client()
        .user_pool_id(&id)
        .client_name(name)
        .explicit_auth_flows(ExplicitAuthFlowsType::AllowUserSrpAuth)
        .explicit_auth_flows(ExplicitAuthFlowsType::AllowRefreshTokenAuth)
        .send()
        .await
        .map_err(|e| sdk("CreateUserPoolClient", &e))?;
    let client_id = client
        .user_pool_client()
        .and_then(|c| c.client_id())
        .ok_or_else(|| UserError::Protocol("CreateUserPoolClient answered no client id".into()))?
        .to_string();
    Ok(Pool { id, client_id })
}

/// Deletes a pool [`create_pool`] made.
pub async fn delete_pool(cognito: &Client, pool: &Pool) -> Result<(), UserError> {
    cognito
        .delete_user_pool()
        .user_pool_id(&pool.id)
        .send()
        .await
        .map_err(|e| sdk("DeleteUserPool", &e))?;
    Ok(())
}

/// Deletes `email` from the pool. Returns whether they existed (removing one who does not is
/// not an error: the command is idempotent).
pub async fn remove_user(cognito: &Client, pool: &Pool, email: &str) -> Result<bool, UserError> {
    match cognito
        .admin_delete_user()
        .user_pool_id(&pool.id)
        .username(email)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_user_not_found_exception()) =>
        {
            Ok(false)
        }
        Err(e) => Err(sdk("AdminDeleteUser", &e)),
    }
}

/// The `sub` of `email`: the owner their images are stored under.
pub async fn sub_of(cognito: &Client, pool: &Pool, email: &str) -> Result<String, UserError> {
    let out = cognito
        .admin_get_user()
        .user_pool_id(&pool.id)
        .username(email)
        .send()
        .await
        .map_err(|e| match e.as_service_error() {
            Some(s) if s.is_user_not_found_exception() => UserError::NoSuchUser(email.into()),
            _ => sdk("AdminGetUser", &e),
        })?;
    out.user_attributes()
        .iter()
        .find(|a| a.name() == "sub")
        .and_then(|a| a.value())
        .map(str::to_string)
        .ok_or_else(|| UserError::Protocol(format!("{email} has no sub")))
}

/// Every user of the pool, by email.
pub async fn list_users(cognito: &Client, pool: &Pool) -> Result<Vec<UserSummary>, UserError> {
    let mut users = Vec::new();
    let mut token = None;
    loop {
        let out = cognito
            .list_users()
            .user_pool_id(&pool.id)
            .set_pagination_token(token)
            .send()
            .await
            .map_err(|e| sdk("ListUsers", &e))?;
        for u in out.users() {
            let attr = |name: &str| {
                u.attributes()
                    .iter()
                    .find(|a| a.name() == name)
                    .and_then(|a| a.value())
                    .unwrap_or("")
                    .to_string()
            };
            users.push(UserSummary {
                email: attr("email"),
                status: u
                    .user_status()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                enabled: u.enabled(),
                sub: attr("sub"),
            });
        }
        token = out.pagination_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    users.sort_by(|a, b| a.email.cmp(&b.email));
    Ok(users)
}

/// Signs `email` in with SRP (`USER_SRP_AUTH`): the pool's challenge, then the password claim.
pub async fn sign_in(
    cognito: &Client,
    pool: &Pool,
    email: &str,
    password: &str,
) -> Result<Tokens, UserError> {
    let srp = Srp::new()?;
    let started = cognito
        .initiate_auth()
        .client_id(&pool.client_id)
        .auth_flow(AuthFlowType::UserSrpAuth)
        .auth_parameters("USERNAME", email)
        .auth_parameters("SRP_A", srp.public_hex())
        .send()
        .await
        .map_err(|e| match e.as_service_error() {
            Some(s) if s.is_not_authorized_exception() || s.is_user_not_found_exception() => {
                UserError::NotAuthorized(email.into())
            }
            _ => sdk("InitiateAuth", &e),
        })?;
    if started.challenge_name() != Some(&ChallengeNameType::PasswordVerifier) {
        return Err(UserError::Challenge(format!(
            "{:?}",
            started.challenge_name()
        )));
    }
    let params = started.challenge_parameters().cloned().unwrap_or_default();
    let get = |k: &str| {
        params
            .get(k)
            .cloned()
            .ok_or_else(|| UserError::Protocol(format!("the challenge has no {k}")))
    };
    let (user_id, secret_block) = (get("USER_ID_FOR_SRP")?, get("SECRET_BLOCK")?);
    let timestamp = srp_timestamp(SystemTime::now());
    let signature = srp.claim(
        &PasswordClaim {
            pool_id: &pool.id,
            user_id: &user_id,
            password,
            salt_hex: &get("SALT")?,
            server_b_hex: &get("SRP_B")?,
            secret_block: &secret_block,
        },
        &timestamp,
    )?;
    let answered = cognito
        .respond_to_auth_challenge()
        .client_id(&pool.client_id)
        .challenge_name(ChallengeNameType::PasswordVerifier)
        .challenge_responses("USERNAME", &user_id)
        .challenge_responses("PASSWORD_CLAIM_SECRET_BLOCK", &secret_block)
        .challenge_responses("PASSWORD_CLAIM_SIGNATURE", signature)
        .challenge_responses("TIMESTAMP", &timestamp)
        .set_session(started.session().map(str::to_string))
        .send()
        .await
        .map_err(|e| match e.as_service_error() {
            Some(s) if s.is_not_authorized_exception() || s.is_user_not_found_exception() => {
                UserError::NotAuthorized(email.into())
            }
            _ => sdk("RespondToAuthChallenge", &e),
        })?;
    if let Some(c) = answered.challenge_name() {
        return Err(UserError::Challenge(c.as_str().to_string()));
    }
    let result = answered
        .authentication_result()
        .ok_or_else(|| UserError::Protocol("no tokens in the answer".into()))?;
    match (result.access_token(), result.id_token()) {
        (Some(access), Some(id)) => Ok(Tokens {
            access_token: access.to_string(),
            id_token: id.to_string(),
            refresh_token: result.refresh_token().map(str::to_string),
            expires_in: result.expires_in(),
        }),
        _ => Err(UserError::Protocol("no tokens in the answer".into())),
    }
}

/// The 3072-bit prime of RFC 5054's group, which Cognito uses with generator 2.
const N_HEX: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD",
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F",
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510",
    "15728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7",
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864D87602733EC86A64521F2B18177B200C",
    "BBE117577A615D6C770988C0BAD946E208E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF",
);

fn big(hex: &str) -> Result<BigUint, UserError> {
    BigUint::parse_bytes(hex.as_bytes(), 16)
        .ok_or_else(|| UserError::Protocol("a challenge value is not hexadecimal".into()))
}

/// Big-endian bytes with a leading zero byte when the high bit is set, as Cognito pads.
fn pad(n: &BigUint) -> Vec<u8> {
    let mut b = n.to_bytes_be();
    if b.first().is_some_and(|&first| first >= 0x80) {
        b.insert(0, 0);
    }
    b
}

fn hash(parts: &[&[u8]]) -> Vec<u8> {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().to_vec()
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message)
        .as_ref()
        .to_vec()
}

/// What the password claim is computed from: the pool's challenge and the user's password.
struct PasswordClaim<'a> {
    pool_id: &'a str,
    user_id: &'a str,
    password: &'a str,
    salt_hex: &'a str,
    server_b_hex: &'a str,
    secret_block: &'a str,
}

/// One SRP exchange: the client's secret `a` and public `A = g^a mod N`.
struct Srp {
    n: BigUint,
    g: BigUint,
    a: BigUint,
    big_a: BigUint,
}

impl Srp {
    fn new() -> Result<Self, UserError> {
        let n = big(N_HEX)?;
        let g = BigUint::from(2u8);
        let mut bytes = [0u8; 128];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| UserError::Protocol("no randomness for the SRP secret".into()))?;
        let a = BigUint::from_bytes_be(&bytes) % &n;
        let big_a = g.modpow(&a, &n);
        if big_a == BigUint::ZERO {
            return Err(UserError::Protocol("a degenerate SRP secret".into()));
        }
        Ok(Self { n, g, a, big_a })
    }

    fn public_hex(&self) -> String {
        self.big_a.to_str_radix(16)
    }

    /// The base64 signature of the password claim at `timestamp`.
    fn claim(&self, c: &PasswordClaim<'_>, timestamp: &str) -> Result<String, UserError> {
        let n = &self.n;
        let big_b = big(c.server_b_hex)?;
        if (&big_b % n) == BigUint::ZERO {
            return Err(UserError::Protocol("the pool sent B = 0 (mod N)".into()));
        }
        let k = BigUint::from_bytes_be(&hash(&[&pad(n), &pad(&self.g)]));
        let u = BigUint::from_bytes_be(&hash(&[&pad(&self.big_a), &pad(&big_b)]));
        if u == BigUint::ZERO {
            return Err(UserError::Protocol("u = 0".into()));
        }
        let pool_name = c
            .pool_id
            .split_once('_')
            .map_or(c.pool_id, |(_, name)| name);
        let inner = hash(&[format!("{pool_name}{}:{}", c.user_id, c.password).as_bytes()]);
        let x = BigUint::from_bytes_be(&hash(&[&pad(&big(c.salt_hex)?), &inner]));
        let g_x = self.g.modpow(&x, n);
        let k_g_x = (k * g_x) % n;
        let base = ((&big_b % n) + n - k_g_x) % n;
        let s = base.modpow(&(&self.a + &u * &x), n);
        let prk = hmac_sha256(&pad(&u), &pad(&s));
        let key = &hmac_sha256(&prk, b"Caldera Derived Key\x01")[..16];
        let block = STANDARD
            .decode(c.secret_block)
            .map_err(|e| UserError::Protocol(format!("SECRET_BLOCK is not base64: {e}")))?;
        let mut message = format!("{pool_name}{}", c.user_id).into_bytes();
        message.extend_from_slice(&block);
        message.extend_from_slice(timestamp.as_bytes());
        Ok(STANDARD.encode(hmac_sha256(key, &message)))
    }
}

/// Cognito's SRP timestamp: `Fri Dec 4 21:05:09 UTC 2026` (the day not padded).
pub fn srp_timestamp(now: SystemTime) -> String {
    let t: chrono::DateTime<chrono::Utc> = now.into();
    t.format("%a %b %-d %H:%M:%S UTC %Y").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_adds_a_zero_byte_only_when_the_high_bit_is_set() {
        assert_eq!(pad(&BigUint::from(0x7fu8)), vec![0x7f]);
        assert_eq!(pad(&BigUint::from(0x80u8)), vec![0, 0x80]);
        assert_eq!(pad(&BigUint::from(0x0180u16)), vec![1, 0x80]);
        assert_eq!(pad(&BigUint::ZERO), vec![0]);
    }

    #[test]
    fn timestamps_are_in_cognitos_format() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_418_309);
        assert_eq!(srp_timestamp(t), "Fri Dec 4 21:05:09 UTC 2026");
    }

    /// The pool's side of the exchange, as Cognito computes it, agrees with the client's
    /// claim for the right password and not for a wrong one.
    #[test]
    fn the_claim_verifies_against_the_pools_side_and_only_with_the_password() {
        let srp = Srp::new().unwrap();
        let (n, g) = (&srp.n, &srp.g);
        let (pool_id, user_id, salt_hex) = ("us-east-1_AbCdEf", "7d3f0c2e", "9f3a11");
        let pool_name = "AbCdEf";
        let verifier = |password: &str| {
            let inner = hash(&[format!("{pool_name}{user_id}:{password}").as_bytes()]);
            let x = BigUint::from_bytes_be(&hash(&[&pad(&big(salt_hex).unwrap()), &inner]));
            g.modpow(&x, n)
        };
        let v = verifier("Correct-Horse-9");
        let b = BigUint::from(123_456_789u64);
        let k = BigUint::from_bytes_be(&hash(&[&pad(n), &pad(g)]));
        let big_b = (k * &v + g.modpow(&b, n)) % n;
        let block = STANDARD.encode(b"secret block");
        let claim = |password: &str| {
            srp.claim(
                &PasswordClaim {
                    pool_id,
                    user_id,
                    password,
                    salt_hex,
                    server_b_hex: &big_b.to_str_radix(16),
                    secret_block: &block,
                },
                "Fri Dec 4 21:05:09 UTC 2026",
            )
            .unwrap()
        };
        // The server's S = (A * v^u)^b.
        let u = BigUint::from_bytes_be(&hash(&[&pad(&srp.big_a), &pad(&big_b)]));
        let s = (&srp.big_a * v.modpow(&u, n)).modpow(&b, n);
        let key = hmac_sha256(&hmac_sha256(&pad(&u), &pad(&s)), b"Caldera Derived Key\x01");
        let mut message = format!("{pool_name}{user_id}").into_bytes();
        message.extend_from_slice(b"secret block");
        message.extend_from_slice(b"Fri Dec 4 21:05:09 UTC 2026");
        let expected = STANDARD.encode(hmac_sha256(&key[..16], &message));
        assert_eq!(claim("Correct-Horse-9"), expected);
        assert_ne!(claim("Correct-Horse-8"), expected);
    }
}
