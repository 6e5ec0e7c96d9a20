//! The emulator's shared state: the world, keys, issued sessions and tokens, counters.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use idbridge_core::SecretString;
use idbridge_core::clock::SharedClock;
use jsonwebtoken::jwk::JwkSet;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::expiring::ExpiringMap;
use crate::keys::{KeyError, SigningKey};
use crate::world::World;

/// At most this many STS sessions (or Google access tokens) are remembered. Expired ones age out
/// as new ones are issued ([`ExpiringMap`]); past the cap, the one due soonest is forgotten
/// (a client presenting it gets the unknown-credential answer). A session is about 700 bytes with
/// its index entry, so the cap holds the emulator's store near 150 MB under any load, while a
/// test or demo, which issues a few hundred, never reaches it.
pub const MAX_REMEMBERED: usize = 200_000;

/// How long an expired STS session is remembered, so that `ExpiredToken` (not
/// `InvalidClientTokenId`) is still answered for it.
const EXPIRED_SESSION_MEMORY: time::Duration = time::Duration::DAY;

/// An STS session the emulated AWS issued.
#[derive(Debug, Clone)]
pub struct AwsSession {
    /// `ASIA…`.
    pub access_key_id: String,
    /// Secret key.
    pub secret_access_key: SecretString,
    /// Session token.
    pub session_token: SecretString,
    /// Role ARN.
    pub role_arn: String,
    /// Session name.
    pub session_name: String,
    /// `AROA…`.
    pub role_id: String,
    /// Expiry.
    pub expires_at: OffsetDateTime,
    /// What the session carries into a role chain.
    pub context: SessionContext,
}

/// What a session carries into the sessions assumed with it (role chaining).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionContext {
    /// `SourceIdentity`, kept for the whole chain once set.
    pub source_identity: Option<String>,
    /// Session tags (`aws:PrincipalTag/…` of the session), keys as given.
    pub tags: Vec<(String, String)>,
    /// Keys of the tags that pass on to the next session of the chain.
    pub transitive_tag_keys: Vec<String>,
    /// Whether the session was assumed with role credentials (`AssumeRole`).
    pub chained: bool,
}

impl AwsSession {
    /// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`.
    pub fn assumed_role_arn(&self) -> String {
        let account = self.role_arn.split(':').nth(4).unwrap_or_default();
        let role = self.role_arn.rsplit('/').next().unwrap_or_default();
        format!(
            "arn:aws:sts::{account}:assumed-role/{role}/{}",
            self.session_name
        )
    }

    /// The account id.
    pub fn account(&self) -> &str {
        self.role_arn.split(':').nth(4).unwrap_or_default()
    }
}

/// Who a Google access token acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GooglePrincipal {
    /// A service account (email).
    ServiceAccount(String),
    /// A federated principal (`principal://iam.googleapis.com/…/subject/…`) with its attributes.
    Federated {
        /// The `principal://` identifier.
        principal: String,
        /// Mapped attributes (`attribute.*`, `google.groups`).
        attributes: BTreeMap<String, String>,
    },
}

/// A Google access token the emulator issued.
#[derive(Debug, Clone)]
pub struct GoogleToken {
    /// Who it acts as.
    pub principal: GooglePrincipal,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Expiry.
    pub expires_at: OffsetDateTime,
}

/// Base URLs of the running listeners (filled once bound).
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    /// AWS STS, e.g. `http://127.0.0.1:4001`.
    pub aws_sts: String,
    /// Google APIs (OAuth2, IAM Credentials, STS, certs), e.g. `http://127.0.0.1:4002`.
    pub google: String,
    /// GCE metadata server, e.g. `http://127.0.0.1:4003`.
    pub metadata: String,
    /// IAM (outbound federation) and the outbound issuers' discovery.
    pub aws_iam: String,
}

/// The emulated clouds.
#[derive(Debug)]
pub struct Emulator {
    /// What exists.
    pub world: World,
    /// Time.
    pub clock: SharedClock,
    /// Google's ID-token signing key.
    pub google_key: SigningKey,
    /// Keys of `generate_key = true` issuers, by issuer URL.
    pub issuer_keys: BTreeMap<String, SigningKey>,
    /// JWKS of every extra issuer (declared or generated), by issuer URL.
    pub issuer_jwks: BTreeMap<String, JwkSet>,
    /// STS sessions by access key id.
    pub aws_sessions: Mutex<ExpiringMap<String, AwsSession>>,
    /// Google access tokens by the SHA-256 of their value (the values themselves are not kept,
    /// so no `Debug` of the emulator can show one).
    pub google_tokens: Mutex<ExpiringMap<[u8; 32], GoogleToken>>,
    /// Counters per operation (`aws_sts.AssumeRoleWithWebIdentity`, …).
    pub stats: Mutex<BTreeMap<String, u64>>,
    /// Where the listeners are.
    pub endpoints: RwLock<Endpoints>,
    /// IMDS tokens and the role sessions of the EC2 instance and ECS tasks.
    pub aws_instance: crate::aws_instance::InstanceState,
    /// Fault injection in front of every listener ([`crate::chaos`]).
    pub chaos: crate::chaos::Chaos,
    /// Outbound identity federation: the switch per account, the ES384 keys.
    pub aws_outbound: crate::aws_outbound::OutboundState,
    /// The SPIFFE trust domain's X.509 CA (when the world has `[spiffe]`).
    pub spiffe_ca: Option<crate::spiffe::x509::SpiffeCa>,
    /// The VM's instance attributes (set through `/_emulator/metadata/…`) and the metadata
    /// server's hanging GETs.
    pub vm_metadata: crate::gce_metadata::VmMetadata,
    /// The Kubernetes cluster's pods and watches ([`crate::kubernetes`]).
    pub kubernetes: crate::kubernetes::Cluster,
}

/// Why an emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Key generation failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A declared JWKS is not a JWK set.
    #[error("oidc_issuer {issuer}: field `jwks`: not a JWK set: {message}")]
    Jwks {
        /// Issuer.
        issuer: String,
        /// Parser message.
        message: String,
    },
}

/// The key of a Google access token in [`Emulator::google_tokens`].
fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Emulator {
    /// Builds the emulator for `world`, generating its keys.
    pub fn new(world: World, clock: SharedClock) -> Result<Arc<Self>, StartError> {
        let google_key = SigningKey::generate_rsa("accounts.google.com")?;
        let mut issuer_keys = BTreeMap::new();
        let mut issuer_jwks = BTreeMap::new();
        for iss in &world.oidc_issuers {
            if iss.generate_key {
                let key = SigningKey::generate_rsa(&iss.issuer)?;
                issuer_jwks.insert(iss.issuer.clone(), crate::keys::jwks([&key]));
                issuer_keys.insert(iss.issuer.clone(), key);
            }
        }
        for (issuer, text) in &world.resolved_jwks {
            let set: JwkSet = serde_json::from_str(text).map_err(|e| StartError::Jwks {
                issuer: issuer.clone(),
                message: e.to_string(),
            })?;
            issuer_jwks.insert(issuer.clone(), set);
        }
        let aws_outbound = crate::aws_outbound::OutboundState::new(&world, &mut issuer_jwks)?;
        let chaos = crate::chaos::Chaos::new(world.chaos.clone());
        let spiffe_ca = match &world.spiffe {
            Some(cfg) => Some(crate::spiffe::x509::SpiffeCa::generate(
                &cfg.trust_domain,
                clock.now(),
            )?),
            None => None,
        };
        let kubernetes = crate::kubernetes::Cluster::new(&world, clock.now());
        Ok(Arc::new(Self {
            kubernetes,
            chaos,
            world,
            clock,
            google_key,
            issuer_keys,
            issuer_jwks,
            aws_sessions: Mutex::new(ExpiringMap::with_capacity_limit(MAX_REMEMBERED)),
            google_tokens: Mutex::new(ExpiringMap::with_capacity_limit(MAX_REMEMBERED)),
            stats: Mutex::default(),
            endpoints: RwLock::default(),
            aws_instance: Default::default(),
            spiffe_ca,
            aws_outbound,
            vm_metadata: Default::default(),
        }))
    }

    /// Counts one call of `op`.
    pub fn bump(&self, op: &str) {
        if let Ok(mut s) = self.stats.lock() {
            *s.entry(op.to_owned()).or_default() += 1;
        }
    }

    /// How many times `op` was called.
    pub fn count(&self, op: &str) -> u64 {
        self.stats
            .lock()
            .ok()
            .and_then(|s| s.get(op).copied())
            .unwrap_or(0)
    }

    /// A snapshot of all counters.
    pub fn stats_snapshot(&self) -> BTreeMap<String, u64> {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Current endpoints.
    pub fn endpoints(&self) -> Endpoints {
        self.endpoints.read().map(|e| e.clone()).unwrap_or_default()
    }

    /// Records an issued Google access token and returns its value.
    pub fn issue_google_token(
        &self,
        principal: GooglePrincipal,
        scopes: Vec<String>,
        lifetime_secs: i64,
    ) -> (String, OffsetDateTime) {
        let token = format!("ya29.emu-{}", hex::encode(rand::random::<[u8; 24]>()));
        let now = self.clock.now();
        let expires_at = now + time::Duration::seconds(lifetime_secs);
        if let Ok(mut m) = self.google_tokens.lock() {
            let issued = GoogleToken {
                principal,
                scopes,
                expires_at,
            };
            m.insert(token_digest(&token), issued, expires_at, now);
        }
        (token, expires_at)
    }

    /// Looks up a live Google access token.
    pub fn google_token(&self, token: &str) -> Option<GoogleToken> {
        let now = self.clock.now();
        self.google_tokens
            .lock()
            .ok()
            .and_then(|m| m.get(&token_digest(token)).cloned())
            .filter(|t| t.expires_at > now)
    }

    /// Records an STS session.
    pub fn insert_session(&self, session: AwsSession) {
        let now = self.clock.now();
        if let Ok(mut m) = self.aws_sessions.lock() {
            let keep_until = session.expires_at + EXPIRED_SESSION_MEMORY;
            m.insert(session.access_key_id.clone(), session, keep_until, now);
        }
    }

    /// Looks up an STS session by access key id (expired ones included; callers check).
    pub fn session(&self, access_key_id: &str) -> Option<AwsSession> {
        self.aws_sessions
            .lock()
            .ok()
            .and_then(|m| m.get(access_key_id).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_the_emulator_shows_no_token() {
        let emu = Emulator::new(World::builtin().unwrap(), idbridge_core::clock::system()).unwrap();
        let (token, _) = emu.issue_google_token(
            GooglePrincipal::ServiceAccount("sa@p.iam.gserviceaccount.com".into()),
            vec!["https://www.googleapis.com/auth/cloud-platform".into()],
            3600,
        );
        emu.insert_session(AwsSession {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: SecretString::new("emulated-secret-key"),
            session_token: SecretString::new("emulated-session-token"),
            role_arn: "arn:aws:iam::111122223333:role/r".into(),
            session_name: "s".into(),
            role_id: "AROAEXAMPLE".into(),
            expires_at: emu.clock.now() + time::Duration::HOUR,
            context: Default::default(),
        });
        assert!(emu.google_token(&token).is_some());
        assert!(emu.google_token("ya29.unknown").is_none());
        let printed = format!("{emu:?}");
        let suffix = token.trim_start_matches("ya29.emu-");
        assert!(!printed.contains(suffix), "a token in {printed}");
        assert!(!printed.contains("emulated-secret-key"), "{printed}");
        assert!(!printed.contains("emulated-session-token"), "{printed}");
    }
}
