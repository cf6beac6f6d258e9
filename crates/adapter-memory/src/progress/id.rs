//! Generated operation IDs: ULIDs (48-bit millisecond time, 80 random bits, Crockford
//! base32), so they sort by creation time like the Redis adapter's.

use spool_domain::names::OperationId;
use spool_domain::Timestamp;
use spool_ports::PortError;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A fresh ULID for `now`.
pub(super) fn generate_operation_id(now: Timestamp) -> Result<OperationId, PortError> {
    let time = u128::from(now.as_millis() & ((1 << 48) - 1));
    let random = rand::random::<u128>() & ((1 << 80) - 1);
    let value = (time << 80) | random;
    let text: String = (0..26)
        .rev()
        .map(|i| char::from(CROCKFORD[((value >> (i * 5)) & 31) as usize]))
        .collect();
    OperationId::parse(text)
        .map_err(|e| PortError::internal(format!("generated operation id is invalid: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_ulids_ordered_by_time() {
        let a = generate_operation_id(Timestamp::from_millis(1_700_000_000_000)).unwrap();
        let b = generate_operation_id(Timestamp::from_millis(1_700_000_000_001)).unwrap();
        assert_eq!(a.as_str().len(), 26);
        assert!(a < b, "{a} < {b}");
        assert_ne!(
            generate_operation_id(Timestamp::EPOCH).unwrap(),
            generate_operation_id(Timestamp::EPOCH).unwrap()
        );
        assert!(generate_operation_id(Timestamp::EPOCH)
            .unwrap()
            .as_str()
            .starts_with("0000000000"));
    }
}
