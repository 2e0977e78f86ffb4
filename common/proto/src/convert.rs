//! Conversions between the domain's key ranges (and a sync chunk's changes) and their protobuf form.

use ferry_model::key::{ChunkRange, KeyBound, KeyValue, RangeDecodeError};

use crate::v1 as pb;

impl From<&KeyValue> for pb::KeyValue {
    fn from(value: &KeyValue) -> Self {
        use pb::key_value::Kind;
        let kind = match value {
            KeyValue::Int(v) => Kind::Int(*v),
            KeyValue::Real(v) => Kind::Real(*v),
            KeyValue::Text(v) => Kind::Text(v.clone()),
            KeyValue::Blob(v) => Kind::Blob(v.clone()),
        };
        pb::KeyValue { kind: Some(kind) }
    }
}

impl TryFrom<pb::KeyValue> for KeyValue {
    type Error = RangeDecodeError;

    fn try_from(value: pb::KeyValue) -> Result<Self, Self::Error> {
        use pb::key_value::Kind;
        match value.kind {
            Some(Kind::Int(v)) => Ok(KeyValue::Int(v)),
            Some(Kind::Real(v)) => Ok(KeyValue::Real(v)),
            Some(Kind::Text(v)) => Ok(KeyValue::Text(v)),
            Some(Kind::Blob(v)) => Ok(KeyValue::Blob(v)),
            Some(Kind::Null(_)) => Err(RangeDecodeError("NULL in a key bound")),
            None => Err(RangeDecodeError("key value without a kind")),
        }
    }
}

fn bound_to_proto(bound: &KeyBound) -> pb::KeyBound {
    pb::KeyBound {
        values: bound.0.iter().map(pb::KeyValue::from).collect(),
    }
}

fn bound_from_proto(bound: pb::KeyBound) -> Result<KeyBound, RangeDecodeError> {
    let values = bound
        .values
        .into_iter()
        .map(KeyValue::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(KeyBound(values))
}

impl From<&ChunkRange> for pb::ChunkRange {
    fn from(range: &ChunkRange) -> Self {
        use pb::chunk_range::Kind;
        let kind = match range {
            ChunkRange::WholeTable => Kind::WholeTable(true),
            ChunkRange::NullKeys => Kind::NullKeys(true),
            ChunkRange::Interval { lower, upper } => Kind::Interval(pb::KeyInterval {
                lower: lower.as_ref().map(bound_to_proto),
                upper: upper.as_ref().map(bound_to_proto),
            }),
        };
        pb::ChunkRange { kind: Some(kind) }
    }
}

impl TryFrom<pb::ChunkRange> for ChunkRange {
    type Error = RangeDecodeError;

    fn try_from(range: pb::ChunkRange) -> Result<Self, Self::Error> {
        use pb::chunk_range::Kind;
        match range.kind {
            Some(Kind::WholeTable(_)) => Ok(ChunkRange::WholeTable),
            Some(Kind::NullKeys(_)) => Ok(ChunkRange::NullKeys),
            Some(Kind::Interval(interval)) => Ok(ChunkRange::Interval {
                lower: interval.lower.map(bound_from_proto).transpose()?,
                upper: interval.upper.map(bound_from_proto).transpose()?,
            }),
            None => Err(RangeDecodeError("chunk range without a kind")),
        }
    }
}

#[cfg(test)]
mod tests {
    use ferry_model::key::{ChunkRange, KeyBound, KeyValue};
    use prost::Message;

    use crate::v1 as pb;

    #[test]
    fn chunk_range_round_trips_through_protobuf() {
        let range = ChunkRange::Interval {
            lower: Some(KeyBound(vec![
                KeyValue::Int(i64::MIN),
                KeyValue::Text("a\"b".into()),
            ])),
            upper: Some(KeyBound(vec![
                KeyValue::Blob(vec![0, 255]),
                KeyValue::Real(-0.5),
            ])),
        };
        let bytes = pb::ChunkRange::from(&range).encode_to_vec();
        let decoded = pb::ChunkRange::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(ChunkRange::try_from(decoded).expect("valid"), range);
    }
}

impl From<&ferry_model::execution::SyncChanges> for pb::SyncChangesValue {
    fn from(changes: &ferry_model::execution::SyncChanges) -> Self {
        pb::SyncChangesValue {
            rows_read: changes.rows_read,
            inserted: changes.inserted,
            updated: changes.updated,
            deleted: changes.deleted,
            recopied_rows: changes.recopied_rows,
            repaired: changes.repaired,
            keys_compared: changes.keys_compared,
        }
    }
}

impl From<pb::SyncChangesValue> for ferry_model::execution::SyncChanges {
    fn from(value: pb::SyncChangesValue) -> Self {
        ferry_model::execution::SyncChanges {
            rows_read: value.rows_read,
            inserted: value.inserted,
            updated: value.updated,
            deleted: value.deleted,
            recopied_rows: value.recopied_rows,
            repaired: value.repaired,
            keys_compared: value.keys_compared,
        }
    }
}
