//! Backend errors classified once, at the adapter boundary.
//!
//! | fred error | `PortError` | why |
//! |---|---|---|
//! | IO, timeout, cancelled, backpressure, cluster redirect storms, `LOADING`, `BUSY`, `TRYAGAIN`, `OOM` | `Unavailable` | the server is down, restarting or overloaded: retry later |
//! | `NOAUTH`, `WRONGPASS`, `NOPERM`, a rejected server certificate, auth / config / URL / TLS setup errors | `Configuration` | an operator must fix credentials, ACLs or TLS |
//! | anything else | `Internal` | a bug or unreadable data |
//!
//! The fred error is kept as the `source`; messages never contain credentials (Redis does not
//! echo passwords, and fred's URL errors are reported without the URL).

use fred::error::{Error as FredError, ErrorKind};
use spool_ports::PortError;

/// Maps a fred error to the port error the caller can act on.
pub(crate) fn classify(err: FredError) -> PortError {
    let details = err.details().to_owned();
    let code = details.split_whitespace().next().unwrap_or("");
    let auth_refused = ["NOAUTH", "WRONGPASS", "NOPERM"]
        .iter()
        .any(|c| code == *c || details.contains(&format!("{c} ")));
    if auth_refused {
        return PortError::Configuration {
            message: format!(
                "redis refused the credentials or permissions ({})",
                first_word_of_refusal(&details)
            ),
            source: Some(Box::new(err)),
        };
    }
    // rustls reports an untrusted or mismatched server certificate as an IO error; retrying
    // cannot fix it.
    if details.contains("InvalidCertificate") || details.contains("NotValidForName") {
        return PortError::Configuration {
            message: "redis TLS certificate rejected (check the CA file and the host name)"
                .to_owned(),
            source: Some(Box::new(err)),
        };
    }
    let transient_code = matches!(
        code,
        "LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN" | "OOM" | "READONLY"
    );
    match err.kind() {
        ErrorKind::IO
        | ErrorKind::Timeout
        | ErrorKind::Canceled
        | ErrorKind::Backpressure
        | ErrorKind::Cluster
        | ErrorKind::Routing => PortError::Unavailable {
            message: format!("redis unavailable: {}", err.kind().to_str()),
            source: Some(Box::new(err)),
        },
        _ if transient_code => PortError::Unavailable {
            message: format!("redis unavailable: {code}"),
            source: Some(Box::new(err)),
        },
        ErrorKind::Auth | ErrorKind::Config | ErrorKind::Url | ErrorKind::Tls => {
            PortError::Configuration {
                message: format!("redis connection setup failed: {}", err.kind().to_str()),
                source: Some(Box::new(err)),
            }
        }
        _ => PortError::Internal {
            message: "redis command failed".to_owned(),
            source: Some(Box::new(err)),
        },
    }
}

fn first_word_of_refusal(details: &str) -> &'static str {
    if details.contains("NOPERM") {
        "NOPERM"
    } else if details.contains("WRONGPASS") {
        "WRONGPASS"
    } else {
        "NOAUTH"
    }
}

/// A reply the adapter cannot read: corrupt data or a script/adapter mismatch.
pub(crate) fn corrupt(what: impl Into<String>) -> PortError {
    PortError::internal(format!("unreadable redis reply: {}", what.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn connection_problems_are_transient() {
        for kind in [ErrorKind::IO, ErrorKind::Timeout, ErrorKind::Canceled] {
            let e = classify(FredError::new(kind, "boom"));
            assert!(e.is_transient(), "{e:?}");
            assert!(e.source().is_some());
        }
        assert!(classify(FredError::new(ErrorKind::Unknown, "LOADING dataset")).is_transient());
        let bad_cert = FredError::new(
            ErrorKind::IO,
            "Custom { kind: InvalidData, error: InvalidCertificate(UnknownIssuer) }",
        );
        assert!(matches!(
            classify(bad_cert),
            PortError::Configuration { .. }
        ));
    }

    #[test]
    fn refused_credentials_are_configuration_errors() {
        for details in [
            "WRONGPASS invalid username-password pair or user is disabled.",
            "NOAUTH Authentication required.",
            "NOPERM User x has no permissions to run the 'get' command",
            "ERR Error running script (call to f_x): @user_script:1: NOPERM No permissions to access a key",
        ] {
            let e = classify(FredError::new(ErrorKind::Unknown, details));
            assert!(
                matches!(e, PortError::Configuration { .. }),
                "{details}: {e:?}"
            );
            assert!(!e.is_transient());
        }
    }

    #[test]
    fn other_errors_are_internal() {
        let e = classify(FredError::new(ErrorKind::Unknown, "ERR unknown command"));
        assert!(matches!(e, PortError::Internal { .. }), "{e:?}");
        assert_eq!(corrupt("x").code(), "internal");
    }
}
