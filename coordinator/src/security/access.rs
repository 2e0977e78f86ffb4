//! Who is calling, and may they: a request's bearer token or client certificate gives
//! the caller's identity and role; each RPC needs a role.

use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use super::tls::certificate_subject;
use super::tokens::{Role, Tokens};

/// The gRPC metadata key of the bearer token.
pub const AUTHORIZATION_KEY: &str = "authorization";

/// The caller of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Recorded in the job's history: `token:NAME`, `cert:SUBJECT` or `anonymous`.
    pub identity: String,
    /// What the caller may do.
    pub role: Role,
}

/// How a Control API authenticates its callers.
#[derive(Clone, Debug)]
pub struct ControlAccess {
    /// Bearer tokens, when the server checks them.
    tokens: Option<Tokens>,
    /// The role of a caller known by its client certificate alone (mutual TLS without
    /// tokens).
    certificate_role: Option<Role>,
}

impl ControlAccess {
    /// No authentication: every caller is an anonymous operator (loopback only, unless
    /// the operator said `--insecure`).
    pub fn open() -> Self {
        ControlAccess {
            tokens: None,
            certificate_role: None,
        }
    }

    /// Checks `tokens` when given; without tokens, a verified client certificate (mutual
    /// TLS) gives `certificate_role` when given.
    pub fn new(tokens: Option<Tokens>, certificate_role: Option<Role>) -> Self {
        ControlAccess {
            tokens,
            certificate_role,
        }
    }

    /// Whether callers must prove who they are.
    pub fn authenticates(&self) -> bool {
        self.tokens.is_some() || self.certificate_role.is_some()
    }

    /// Who calls `rpc` with `request`, if they may: UNAUTHENTICATED without a known token
    /// (or certificate), PERMISSION_DENIED when their role is below `needed`.
    pub fn authorize<T>(
        &self,
        request: &Request<T>,
        rpc: &str,
        needed: Role,
    ) -> Result<Caller, Status> {
        let subject_opt = request.peer_certs().and_then(|certificates| {
            certificates
                .first()
                .and_then(|der| certificate_subject(der))
        });
        let authorization_opt = authorization_text(request.metadata());
        self.authorize_presented(authorization_opt, subject_opt, rpc, needed)
            .map_err(Status::from)
    }

    /// Who calls `rpc` with the `Authorization` header value `authorization_opt` (an
    /// HTTP request of the console, which has no client certificate), if they may.
    pub fn authorize_header(
        &self,
        authorization_opt: Option<&str>,
        rpc: &str,
        needed: Role,
    ) -> Result<Caller, AccessDenied> {
        self.authorize_presented(authorization_opt, None, rpc, needed)
    }

    fn authorize_presented(
        &self,
        authorization_opt: Option<&str>,
        subject_opt: Option<String>,
        rpc: &str,
        needed: Role,
    ) -> Result<Caller, AccessDenied> {
        let caller = self.identify(authorization_opt, subject_opt, rpc)?;
        if caller.role.allows(needed) {
            return Ok(caller);
        }
        Err(AccessDenied::PermissionDenied(format!(
            "{rpc} needs the {needed} role; {} has the {} role (ask for an operator token)",
            caller.identity, caller.role
        )))
    }

    fn identify(
        &self,
        authorization_opt: Option<&str>,
        subject_opt: Option<String>,
        rpc: &str,
    ) -> Result<Caller, AccessDenied> {
        if let Some(tokens) = &self.tokens {
            let Some(value) = authorization_opt else {
                return Err(AccessDenied::Unauthenticated(format!(
                    "{rpc} needs a bearer token: this server checks tokens (server.tokens_file); \
                     give ferryctl --token-file FILE (or FERRY_TOKEN_FILE)"
                )));
            };
            let presented = value.strip_prefix("Bearer ").map(str::trim);
            let Some(presented) = presented else {
                return Err(AccessDenied::Unauthenticated(format!(
                    "{rpc}: the authorization metadata is not `Bearer TOKEN`"
                )));
            };
            let Some((name, role)) = tokens.find(presented) else {
                return Err(AccessDenied::Unauthenticated(format!(
                    "{rpc}: the bearer token is not one of this server's tokens \
                     (server.tokens_file); check the file given to --token-file"
                )));
            };
            return Ok(Caller {
                identity: format!("token:{name}"),
                role,
            });
        }
        if let Some(role) = self.certificate_role {
            let Some(subject) = subject_opt else {
                return Err(AccessDenied::Unauthenticated(format!(
                    "{rpc} needs a client certificate signed by this server's client CA \
                     (server.client_ca): give ferryctl --cert and --key (the web console \
                     cannot present one: give the server a tokens file for it)"
                )));
            };
            return Ok(Caller {
                identity: format!("cert:{subject}"),
                role,
            });
        }
        Ok(Caller {
            identity: "anonymous".to_owned(),
            role: Role::Operator,
        })
    }
}

/// Why a caller was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessDenied {
    /// No known token (or certificate): gRPC UNAUTHENTICATED, HTTP 401.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's role is below the call's: gRPC PERMISSION_DENIED, HTTP 403.
    #[error("{0}")]
    PermissionDenied(String),
}

impl From<AccessDenied> for Status {
    fn from(denied: AccessDenied) -> Self {
        match denied {
            AccessDenied::Unauthenticated(message) => Status::unauthenticated(message),
            AccessDenied::PermissionDenied(message) => Status::permission_denied(message),
        }
    }
}

/// The `authorization` metadata as text; a value that is not ASCII reads as empty (and
/// is refused as not `Bearer TOKEN`).
fn authorization_text(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get(AUTHORIZATION_KEY)
        .map(|value| value.to_str().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn request_with(token_opt: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(token) = token_opt {
            let value = format!("Bearer {token}").parse().expect("ascii");
            request.metadata_mut().insert(AUTHORIZATION_KEY, value);
        }
        request
    }

    fn tokens() -> Tokens {
        Tokens::parse(
            "ops operator ops-token-0123456789\nlook viewer look-token-0123456789\n",
            Path::new("tokens"),
        )
        .expect("tokens")
    }

    #[test]
    fn tokens_give_identity_and_role() {
        let access = ControlAccess::new(Some(tokens()), None);
        let caller = access
            .authorize(
                &request_with(Some("ops-token-0123456789")),
                "PauseJob",
                Role::Operator,
            )
            .expect("operator");
        assert_eq!(caller.identity, "token:ops");
        let viewer = access
            .authorize(
                &request_with(Some("look-token-0123456789")),
                "GetJob",
                Role::Viewer,
            )
            .expect("viewer reads");
        assert_eq!(viewer.role, Role::Viewer);
    }

    #[test]
    fn missing_unknown_and_underprivileged_callers_are_refused_with_the_right_code() {
        let access = ControlAccess::new(Some(tokens()), None);
        let missing = access
            .authorize(&request_with(None), "GetJob", Role::Viewer)
            .expect_err("no token");
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        assert!(
            missing.message().contains("--token-file"),
            "{}",
            missing.message()
        );
        let unknown = access
            .authorize(
                &request_with(Some("guess-0123456789abc")),
                "GetJob",
                Role::Viewer,
            )
            .expect_err("unknown token");
        assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
        assert!(
            !unknown.message().contains("guess"),
            "{}",
            unknown.message()
        );
        let viewer = access
            .authorize(
                &request_with(Some("look-token-0123456789")),
                "CancelJob",
                Role::Operator,
            )
            .expect_err("viewer cancelling");
        assert_eq!(viewer.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            viewer.message(),
            "CancelJob needs the operator role; token:look has the viewer role (ask for an operator token)"
        );
    }

    #[test]
    fn an_open_server_treats_everyone_as_an_anonymous_operator() {
        let caller = ControlAccess::open()
            .authorize(&request_with(None), "CancelJob", Role::Operator)
            .expect("open");
        assert_eq!(caller.identity, "anonymous");
        assert!(!ControlAccess::open().authenticates());
    }

    #[test]
    fn mutual_tls_without_tokens_needs_a_certificate() {
        let access = ControlAccess::new(None, Some(Role::Operator));
        let refused = access
            .authorize(&request_with(None), "GetJob", Role::Viewer)
            .expect_err("no certificate");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    }
}
