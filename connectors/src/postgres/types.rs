//! PostgreSQL types as ferry understands them: how a catalog type is recognised, which
//! [`ColumnType`] carries it, which PostgreSQL type a [`ColumnType`] of another engine
//! becomes in a target, and which conversions the reader and writer can make between a
//! carrier and a PostgreSQL binary format.

use ferry_model::schema::ColumnType;

/// Built-in type OIDs (stable across PostgreSQL versions, `pg_type.dat`).
pub mod oid {
    /// `boolean`
    pub const BOOL: u32 = 16;
    /// `bytea`
    pub const BYTEA: u32 = 17;
    /// `name`
    pub const NAME: u32 = 19;
    /// `bigint`
    pub const INT8: u32 = 20;
    /// `smallint`
    pub const INT2: u32 = 21;
    /// `integer`
    pub const INT4: u32 = 23;
    /// `text`
    pub const TEXT: u32 = 25;
    /// `json`
    pub const JSON: u32 = 114;
    /// `real`
    pub const FLOAT4: u32 = 700;
    /// `double precision`
    pub const FLOAT8: u32 = 701;
    /// `character(n)`
    pub const BPCHAR: u32 = 1042;
    /// `character varying(n)`
    pub const VARCHAR: u32 = 1043;
    /// `date`
    pub const DATE: u32 = 1082;
    /// `time without time zone`
    pub const TIME: u32 = 1083;
    /// `timestamp without time zone`
    pub const TIMESTAMP: u32 = 1114;
    /// `timestamp with time zone`
    pub const TIMESTAMPTZ: u32 = 1184;
    /// `interval`
    pub const INTERVAL: u32 = 1186;
    /// `time with time zone`
    pub const TIMETZ: u32 = 1266;
    /// `numeric`
    pub const NUMERIC: u32 = 1700;
    /// `uuid`
    pub const UUID: u32 = 2950;
    /// `jsonb`
    pub const JSONB: u32 = 3802;
}

/// A PostgreSQL scalar type whose binary format ferry reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scalar {
    /// `boolean`: one byte.
    Bool,
    /// `smallint`: big-endian i16.
    Int2,
    /// `integer`: big-endian i32.
    Int4,
    /// `bigint`: big-endian i64.
    Int8,
    /// `real`: big-endian IEEE single.
    Float4,
    /// `double precision`: big-endian IEEE double.
    Float8,
    /// `numeric`: base-10000 digits.
    Numeric,
    /// `text`, `varchar`, `bpchar`, `name`: the UTF-8 bytes.
    Text,
    /// `bytea`: the bytes.
    Bytea,
    /// `date`: i32 days since 2000-01-01.
    Date,
    /// `time`: i64 microseconds since midnight.
    Time,
    /// `timetz`: i64 microseconds, then i32 zone offset in seconds west of UTC.
    TimeTz,
    /// `timestamp`: i64 microseconds since 2000-01-01.
    Timestamp,
    /// `timestamptz`: i64 microseconds since 2000-01-01 UTC.
    TimestampTz,
    /// `interval`: i64 microseconds, i32 days, i32 months.
    Interval,
    /// `uuid`: 16 bytes.
    Uuid,
    /// `json`: the text.
    Json,
    /// `jsonb`: version byte 1, then the text.
    Jsonb,
    /// A user-defined enum: the label's bytes.
    Enum,
}

impl Scalar {
    /// The scalar of a built-in type OID; `None` for types ferry does not carry.
    pub fn from_builtin_oid(type_oid: u32) -> Option<Scalar> {
        Some(match type_oid {
            oid::BOOL => Scalar::Bool,
            oid::INT2 => Scalar::Int2,
            oid::INT4 => Scalar::Int4,
            oid::INT8 => Scalar::Int8,
            oid::FLOAT4 => Scalar::Float4,
            oid::FLOAT8 => Scalar::Float8,
            oid::NUMERIC => Scalar::Numeric,
            oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME => Scalar::Text,
            oid::BYTEA => Scalar::Bytea,
            oid::DATE => Scalar::Date,
            oid::TIME => Scalar::Time,
            oid::TIMETZ => Scalar::TimeTz,
            oid::TIMESTAMP => Scalar::Timestamp,
            oid::TIMESTAMPTZ => Scalar::TimestampTz,
            oid::INTERVAL => Scalar::Interval,
            oid::UUID => Scalar::Uuid,
            oid::JSON => Scalar::Json,
            oid::JSONB => Scalar::Jsonb,
            _ => return None,
        })
    }

    /// Returns whether the type is an integer (keys are carried as `KeyValue::Int`).
    pub fn is_integer(self) -> bool {
        matches!(self, Scalar::Int2 | Scalar::Int4 | Scalar::Int8)
    }
}

/// A column's type as it travels in binary COPY.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WireType {
    /// A scalar.
    Scalar(Scalar),
    /// An array of a scalar; `element_oid` is what the binary array header names.
    Array {
        /// The element type.
        element: Scalar,
        /// The element type's OID (an enum's own OID for arrays of enums).
        element_oid: u32,
    },
    /// A type ferry cannot carry (geometric, network, ranges, domains, composites...).
    Unsupported,
}

impl WireType {
    /// Recognises a catalog type from `pg_type` facts: its OID and `typtype`, and for
    /// arrays (`typcategory = 'A'`) the element's OID and `typtype`.
    pub fn from_catalog(
        type_oid: u32,
        typtype: &str,
        typcategory: &str,
        element_oid: u32,
        element_typtype: Option<&str>,
    ) -> WireType {
        let scalar_of = |scalar_oid: u32, scalar_typtype: &str| -> Option<Scalar> {
            if scalar_typtype == "e" {
                Some(Scalar::Enum)
            } else if scalar_typtype == "b" {
                Scalar::from_builtin_oid(scalar_oid)
            } else {
                None
            }
        };
        if typcategory == "A" && element_oid != 0 {
            // int2vector and oidvector are arrays too, but of types ferry does not carry
            // or with their own fixed layout; only real `T[]` types land here.
            return match element_typtype.and_then(|t| scalar_of(element_oid, t)) {
                Some(element) => WireType::Array {
                    element,
                    element_oid,
                },
                None => WireType::Unsupported,
            };
        }
        match scalar_of(type_oid, typtype) {
            Some(scalar) => WireType::Scalar(scalar),
            None => WireType::Unsupported,
        }
    }
}

/// Decodes a `numeric` typmod into `(precision, scale)`; `None` when unconstrained.
pub fn numeric_typmod(typmod: i32) -> Option<(u32, i32)> {
    // VARHDRSZ = 4; precision in the high 16 bits, scale in the low 11 bits as a
    // signed value (PostgreSQL 15 allows negative scales).
    if typmod < 4 {
        return None;
    }
    let packed = typmod - 4;
    let precision = ((packed >> 16) & 0xffff) as u32;
    let scale = ((packed & 0x7ff) ^ 1024) - 1024;
    Some((precision, scale))
}

/// The [`ColumnType`] that carries a column of `wire` type. Unsupported types are
/// described as text so that describing works; reading and preparing refuse them.
pub fn column_type_of(wire: &WireType, typmod: i32, enum_labels: &[String]) -> ColumnType {
    match wire {
        WireType::Scalar(scalar) => scalar_column_type(*scalar, typmod, enum_labels),
        WireType::Array { element, .. } => ColumnType::Array {
            element: Box::new(scalar_column_type(*element, typmod, enum_labels)),
        },
        WireType::Unsupported => ColumnType::Text,
    }
}

fn scalar_column_type(scalar: Scalar, typmod: i32, enum_labels: &[String]) -> ColumnType {
    match scalar {
        Scalar::Bool => ColumnType::Bool,
        Scalar::Int2 => ColumnType::Int16,
        Scalar::Int4 => ColumnType::Int32,
        Scalar::Int8 => ColumnType::Int64,
        Scalar::Float4 => ColumnType::Float32,
        Scalar::Float8 => ColumnType::Float64,
        Scalar::Numeric => match numeric_typmod(typmod) {
            Some((precision, scale)) => ColumnType::Decimal {
                precision: Some(precision),
                scale: Some(scale),
            },
            None => ColumnType::Decimal {
                precision: None,
                scale: None,
            },
        },
        Scalar::Text => ColumnType::Text,
        Scalar::Bytea => ColumnType::Blob,
        Scalar::Date => ColumnType::Date,
        Scalar::Time => ColumnType::Time,
        Scalar::TimeTz => ColumnType::TimeTz,
        Scalar::Timestamp => ColumnType::Timestamp,
        Scalar::TimestampTz => ColumnType::TimestampTz,
        Scalar::Interval => ColumnType::Interval,
        Scalar::Uuid => ColumnType::Uuid,
        Scalar::Json | Scalar::Jsonb => ColumnType::Json,
        Scalar::Enum => ColumnType::Enum {
            labels: enum_labels.to_vec(),
        },
    }
}

/// The PostgreSQL type a column of another engine becomes, or why there is none.
pub fn target_type_for(column_type: &ColumnType) -> Result<String, &'static str> {
    Ok(match column_type {
        ColumnType::Bool => "boolean".to_string(),
        ColumnType::Int8 | ColumnType::Int16 | ColumnType::UInt8 | ColumnType::Year => {
            "smallint".to_string()
        }
        ColumnType::Int32 | ColumnType::UInt16 => "integer".to_string(),
        ColumnType::Int64 | ColumnType::UInt32 => "bigint".to_string(),
        ColumnType::UInt64 => "numeric(20,0)".to_string(),
        ColumnType::Bit { width } if *width < 64 => "bigint".to_string(),
        ColumnType::Bit { .. } => "numeric(20,0)".to_string(),
        ColumnType::Float32 => "real".to_string(),
        ColumnType::Float64 => "double precision".to_string(),
        ColumnType::Decimal {
            precision: Some(precision),
            scale,
        } => format!("numeric({precision},{})", scale.unwrap_or(0)),
        ColumnType::Decimal {
            precision: None, ..
        } => "numeric".to_string(),
        ColumnType::Text | ColumnType::Enum { .. } | ColumnType::Set { .. } => "text".to_string(),
        ColumnType::Blob => "bytea".to_string(),
        ColumnType::Date => "date".to_string(),
        ColumnType::Time => "time".to_string(),
        ColumnType::TimeTz => "timetz".to_string(),
        ColumnType::Timestamp => "timestamp".to_string(),
        ColumnType::TimestampTz => "timestamptz".to_string(),
        ColumnType::Interval => "interval".to_string(),
        ColumnType::Uuid => "uuid".to_string(),
        ColumnType::Json | ColumnType::Array { .. } => "jsonb".to_string(),
        ColumnType::Variant => {
            return Err(
                "its values keep their own types row by row (SQLite NUMERIC or untyped), \
                 which no PostgreSQL column holds losslessly",
            );
        }
    })
}

/// The built-in PostgreSQL type whose binary format decodes directly into the carrier of
/// `wanted`; a target column of another type is cast to it when read back for
/// verification. `None` when no cast can produce the carrier.
pub fn read_cast_for(wanted: &ColumnType) -> Option<&'static str> {
    Some(match wanted {
        ColumnType::Bool => "boolean",
        ColumnType::Int8 | ColumnType::Int16 | ColumnType::UInt8 | ColumnType::Year => "smallint",
        ColumnType::Int32 | ColumnType::UInt16 => "integer",
        ColumnType::Int64 | ColumnType::UInt32 => "bigint",
        ColumnType::UInt64 | ColumnType::Bit { .. } | ColumnType::Decimal { .. } => "numeric",
        ColumnType::Float32 => "real",
        ColumnType::Float64 => "double precision",
        ColumnType::Text | ColumnType::Enum { .. } | ColumnType::Set { .. } => "text",
        ColumnType::Blob => "bytea",
        ColumnType::Date => "date",
        ColumnType::Time => "time",
        ColumnType::TimeTz => "timetz",
        ColumnType::Timestamp => "timestamp",
        ColumnType::TimestampTz => "timestamptz",
        ColumnType::Interval => "interval",
        ColumnType::Uuid => "uuid",
        ColumnType::Json => "json",
        ColumnType::Array { .. } | ColumnType::Variant => return None,
    })
}

/// Returns whether the reader decodes `wire` straight into the carrier of `wanted`.
pub fn decodes_directly(wire: &WireType, wanted: &ColumnType) -> bool {
    let scalar = match wire {
        WireType::Scalar(scalar) => *scalar,
        WireType::Array { .. } => return matches!(wanted, ColumnType::Array { .. }),
        WireType::Unsupported => return false,
    };
    match wanted {
        ColumnType::Bool => scalar == Scalar::Bool,
        ColumnType::Int8
        | ColumnType::Int16
        | ColumnType::Int32
        | ColumnType::Int64
        | ColumnType::UInt8
        | ColumnType::UInt16
        | ColumnType::UInt32
        | ColumnType::UInt64
        | ColumnType::Bit { .. }
        | ColumnType::Year => scalar.is_integer() || scalar == Scalar::Numeric,
        ColumnType::Float32 | ColumnType::Float64 => {
            matches!(scalar, Scalar::Float4 | Scalar::Float8)
        }
        ColumnType::Decimal { .. } => scalar == Scalar::Numeric || scalar.is_integer(),
        ColumnType::Text | ColumnType::Enum { .. } | ColumnType::Set { .. } => {
            matches!(scalar, Scalar::Text | Scalar::Enum)
        }
        ColumnType::Blob => scalar == Scalar::Bytea,
        ColumnType::Date => scalar == Scalar::Date,
        ColumnType::Time => scalar == Scalar::Time,
        ColumnType::TimeTz => scalar == Scalar::TimeTz,
        ColumnType::Timestamp => scalar == Scalar::Timestamp,
        ColumnType::TimestampTz => scalar == Scalar::TimestampTz,
        ColumnType::Interval => scalar == Scalar::Interval,
        ColumnType::Uuid => scalar == Scalar::Uuid,
        ColumnType::Json | ColumnType::Array { .. } => {
            matches!(scalar, Scalar::Json | Scalar::Jsonb)
        }
        ColumnType::Variant => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_typmods_decode_precision_and_signed_scale() {
        // numeric(10,2): ((10 << 16) | 2) + 4
        assert_eq!(numeric_typmod((10 << 16 | 2) + 4), Some((10, 2)));
        assert_eq!(numeric_typmod(-1), None);
        // numeric(3,-2) in PostgreSQL 15: scale stored as 11-bit two's complement.
        assert_eq!(
            numeric_typmod(((3 << 16) | (0x7ff & -2)) + 4),
            Some((3, -2))
        );
    }

    #[test]
    fn catalog_facts_give_wire_types() {
        assert_eq!(
            WireType::from_catalog(oid::INT4, "b", "N", 0, None),
            WireType::Scalar(Scalar::Int4)
        );
        assert_eq!(
            WireType::from_catalog(99_999, "e", "E", 0, None),
            WireType::Scalar(Scalar::Enum)
        );
        assert_eq!(
            WireType::from_catalog(1007, "b", "A", oid::INT4, Some("b")),
            WireType::Array {
                element: Scalar::Int4,
                element_oid: oid::INT4
            }
        );
        // inet, and a domain over integer.
        assert_eq!(
            WireType::from_catalog(869, "b", "I", 0, None),
            WireType::Unsupported
        );
        assert_eq!(
            WireType::from_catalog(88_888, "d", "N", 0, None),
            WireType::Unsupported
        );
    }

    #[test]
    fn every_foreign_type_but_variant_has_a_target_that_round_trips() {
        let types = [
            ColumnType::Bool,
            ColumnType::Int8,
            ColumnType::UInt64,
            ColumnType::Bit { width: 64 },
            ColumnType::Year,
            ColumnType::Decimal {
                precision: Some(12),
                scale: Some(2),
            },
            ColumnType::Set { labels: vec![] },
            ColumnType::Array {
                element: Box::new(ColumnType::Int32),
            },
            ColumnType::Uuid,
        ];
        for column_type in types {
            let target = target_type_for(&column_type).expect("mapped");
            assert!(!target.is_empty());
            assert!(read_cast_for(&column_type).is_some() || column_type_is_array(&column_type));
        }
        assert!(target_type_for(&ColumnType::Variant).is_err());
    }

    fn column_type_is_array(column_type: &ColumnType) -> bool {
        matches!(column_type, ColumnType::Array { .. })
    }
}
