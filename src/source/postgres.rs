//! What a failed `pg_dump` says: libpq's and the server's messages (stable English texts; the
//! server's are sent before the client's locale applies) sorted into causes a later attempt may
//! get past (the server starting up, nothing listening yet, no answer in time) and causes it
//! cannot (a wrong password, an unknown database or role).

use super::process::Diagnosis;

/// Causes no retry gets past, checked first: libpq words an authentication failure as a failed
/// connection too ("connection to server ... failed: FATAL: password authentication failed").
const PERMANENT: &[(&str, &str)] = &[
    ("password authentication failed", "authentication failed"),
    ("no password supplied", "authentication failed (no password supplied)"),
    ("authentication failed", "authentication failed"),
    ("no pg_hba.conf entry", "the server does not admit this user or host (pg_hba.conf)"),
    ("does not exist", ""),
    ("permission denied", "permission denied in the database"),
    ("server version mismatch", "pg_dump is older than the server"),
];

/// Causes that may pass: the server restarting, not started yet, or not answering.
const TRANSIENT: &[(&str, &str)] = &[
    ("the database system is starting up", "the server is starting up"),
    ("the database system is shutting down", "the server is shutting down"),
    ("the database system is in recovery mode", "the server is recovering"),
    ("the database system is not yet accepting connections", "the server is not accepting connections yet"),
    ("the database system is not accepting connections", "the server is not accepting connections"),
    ("too many clients already", "the server has no free connection slot"),
    ("remaining connection slots are reserved", "the server has no free connection slot"),
    ("connection refused", "connection refused: is the server running?"),
    ("is the server running", "no server is listening: is it running?"),
    ("timeout expired", "the server did not answer in time"),
    ("timed out", "the server did not answer in time"),
    ("server closed the connection unexpectedly", "the server closed the connection"),
    ("connection reset by peer", "the server closed the connection"),
    ("temporary failure in name resolution", "the host name could not be resolved (DNS)"),
    ("network is unreachable", "the network is unreachable"),
    ("no route to host", "the network is unreachable"),
    ("could not connect", "could not connect to the server"),
];

/// The cause of a `pg_dump` failure from its stderr; `None` for a text not recognised (treated
/// as permanent by the caller).
pub fn diagnose(stderr: &str) -> Option<Diagnosis> {
    let s = stderr.to_ascii_lowercase();
    for (needle, cause) in PERMANENT {
        if !s.contains(needle) {
            continue;
        }
        let cause = match *needle {
            // `database "x" does not exist`, `role "x" does not exist`; a missing table or schema
            // in a dump option is also permanent.
            "does not exist" if s.contains("database \"") => "unknown database",
            "does not exist" if s.contains("role \"") => "unknown role",
            "does not exist" => "an object named in the dump does not exist",
            _ => cause,
        };
        return Some(Diagnosis { transient: false, cause });
    }
    TRANSIENT.iter().find(|(needle, _)| s.contains(needle)).map(|(_, cause)| Diagnosis { transient: true, cause })
}

#[cfg(test)]
mod tests {
    use super::diagnose;

    fn d(s: &str) -> Option<(bool, &'static str)> {
        diagnose(s).map(|d| (d.transient, d.cause))
    }

    #[test]
    fn libpq_messages_are_sorted_into_transient_and_permanent_causes() {
        let sock = "pg_dump: error: connection to server on socket \"/run/pg/.s.PGSQL.5432\" failed: ";
        assert_eq!(d(&format!("{sock}No such file or directory\n\tIs the server running locally and accepting connections on that socket?")), Some((true, "no server is listening: is it running?")));
        assert_eq!(
            d(&format!("{sock}FATAL:  the database system is starting up")),
            Some((true, "the server is starting up"))
        );
        assert_eq!(
            d("pg_dump: error: connection to server at \"127.0.0.1\", port 1 failed: Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?"),
            Some((true, "connection refused: is the server running?"))
        );
        assert_eq!(
            d("connection to server at \"10.0.0.1\", port 5432 failed: timeout expired"),
            Some((true, "the server did not answer in time"))
        );
        assert_eq!(
            d(&format!("{sock}FATAL:  password authentication failed for user \"app\"")),
            Some((false, "authentication failed"))
        );
        assert_eq!(
            d(&format!("{sock}FATAL:  database \"nosuchdb\" does not exist")),
            Some((false, "unknown database"))
        );
        assert_eq!(d(&format!("{sock}FATAL:  role \"ghost\" does not exist")), Some((false, "unknown role")));
        assert_eq!(
            d("pg_dump: error: query failed: ERROR:  permission denied for table items"),
            Some((false, "permission denied in the database"))
        );
        assert_eq!(d("pg_dump: error: something else"), None);
    }
}
