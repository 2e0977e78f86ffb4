//! ClickHouse column types: parsed from `system.columns.type`, mapped to ferry's
//! [`ColumnType`]s (source), and chosen for another engine's columns (target). The
//! mapping table is in `docs/types.md`.

use ferry_model::schema::ColumnType;

/// A parsed ClickHouse type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChType {
    /// `UInt8` (also `Bool` on servers that have it, stored as one byte).
    UInt8,
    /// `UInt16`.
    UInt16,
    /// `UInt32`.
    UInt32,
    /// `UInt64`.
    UInt64,
    /// `Int8`.
    Int8,
    /// `Int16`.
    Int16,
    /// `Int32`.
    Int32,
    /// `Int64`.
    Int64,
    /// `Float32`.
    Float32,
    /// `Float64`.
    Float64,
    /// `Bool` (21.12 and later).
    Bool,
    /// `String`: bytes.
    String,
    /// `FixedString(n)`.
    FixedString(usize),
    /// `Date`: days since 1970-01-01 as `UInt16`.
    Date,
    /// `DateTime[('zone')]`: seconds since the epoch as `UInt32`.
    DateTime,
    /// `DateTime64(precision[, 'zone'])` (20.1 and later): ticks as `Int64`.
    DateTime64(u32),
    /// `Decimal(p, s)` (and `Decimal32/64/128(s)`).
    Decimal(u32, u32),
    /// `UUID`.
    Uuid,
    /// `Enum8(...)` / `Enum16(...)`: labels and values, and whether 16-bit.
    Enum(Vec<(String, i16)>, bool),
    /// `Nullable(T)`.
    Nullable(Box<ChType>),
    /// `LowCardinality(T)`: in RowBinary, like `T`.
    LowCardinality(Box<ChType>),
    /// `Array(T)`.
    Array(Box<ChType>),
    /// `Tuple(T1, T2, ...)`: passed between ClickHouse servers only.
    Tuple(Vec<ChType>),
    /// `Map(K, V)` (21.1+): passed between ClickHouse servers only.
    Map(Box<ChType>, Box<ChType>),
    /// A fixed-width type passed between ClickHouse servers only (`Int128`, `UInt256`,
    /// `IPv4`, `IPv6`, `Date32`, `Decimal256`...): its name and width in bytes.
    Opaque(String, usize),
}

/// Splits `a, b(c, d), 'e,f'` at its top-level commas.
fn split_args(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0usize);
    let bytes = text.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'\\' if quoted => index += 1,
            b'\'' => quoted = !quoted,
            b'(' if !quoted => depth += 1,
            b')' if !quoted => depth -= 1,
            b',' if !quoted && depth == 0 => {
                parts.push(text[start..index].trim());
                start = index + 1;
            }
            _ => {}
        }
        index += 1;
    }
    let last = text[start..].trim();
    if !last.is_empty() {
        parts.push(last);
    }
    parts
}

fn unquote(text: &str) -> Option<String> {
    let inner = text.trim().strip_prefix('\'')?.strip_suffix('\'')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next()?);
        } else {
            out.push(c);
        }
    }
    Some(out)
}

impl ChType {
    /// Parses a type as `system.columns` prints it; `None` for a type ferry does not carry.
    pub fn parse(text: &str) -> Option<ChType> {
        let text = text.trim();
        let (name, args) = match text.find('(') {
            Some(open) if text.ends_with(')') => {
                (&text[..open], Some(&text[open + 1..text.len() - 1]))
            }
            Some(_) => return None,
            None => (text, None),
        };
        let arg_list = args.map(split_args).unwrap_or_default();
        let single = |index: usize| arg_list.get(index).and_then(|arg| arg.parse::<u32>().ok());
        Some(match (name, args) {
            ("UInt8", None) => ChType::UInt8,
            ("UInt16", None) => ChType::UInt16,
            ("UInt32", None) => ChType::UInt32,
            ("UInt64", None) => ChType::UInt64,
            ("Int8", None) => ChType::Int8,
            ("Int16", None) => ChType::Int16,
            ("Int32", None) => ChType::Int32,
            ("Int64", None) => ChType::Int64,
            ("Float32", None) => ChType::Float32,
            ("Float64", None) => ChType::Float64,
            ("Bool", None) => ChType::Bool,
            ("String", None) => ChType::String,
            ("FixedString", Some(_)) => ChType::FixedString(single(0)? as usize),
            ("Date", None) => ChType::Date,
            ("DateTime", _) => ChType::DateTime,
            ("DateTime64", Some(_)) => ChType::DateTime64(single(0)?),
            ("Decimal", Some(_)) if single(0)? > 38 => ChType::Opaque(text.to_string(), 32),
            ("Decimal", Some(_)) => ChType::Decimal(single(0)?, single(1)?),
            ("Decimal32", Some(_)) => ChType::Decimal(9, single(0)?),
            ("Decimal64", Some(_)) => ChType::Decimal(18, single(0)?),
            ("Decimal128", Some(_)) => ChType::Decimal(38, single(0)?),
            ("UUID", None) => ChType::Uuid,
            ("Enum8" | "Enum16", Some(_)) => {
                let mut labels = Vec::new();
                for arg in &arg_list {
                    let equals = arg.rfind('=')?;
                    let label = unquote(&arg[..equals])?;
                    let value: i16 = arg[equals + 1..].trim().parse().ok()?;
                    labels.push((label, value));
                }
                ChType::Enum(labels, name == "Enum16")
            }
            ("Nullable", Some(inner)) => ChType::Nullable(Box::new(ChType::parse(inner)?)),
            ("LowCardinality", Some(inner)) => {
                ChType::LowCardinality(Box::new(ChType::parse(inner)?))
            }
            ("Array", Some(inner)) => ChType::Array(Box::new(ChType::parse(inner)?)),
            ("Tuple", Some(_)) => ChType::Tuple(
                arg_list
                    .iter()
                    .map(|arg| {
                        // Named elements (`Tuple(a UInt8, b String)`): the type follows the name.
                        ChType::parse(arg).or_else(|| ChType::parse(arg.split_once(' ')?.1))
                    })
                    .collect::<Option<Vec<_>>>()?,
            ),
            ("Map", Some(_)) if arg_list.len() == 2 => ChType::Map(
                Box::new(ChType::parse(arg_list[0])?),
                Box::new(ChType::parse(arg_list[1])?),
            ),
            ("Int128" | "UInt128" | "IPv6", None) => ChType::Opaque(name.to_string(), 16),
            ("Int256" | "UInt256", None) => ChType::Opaque(name.to_string(), 32),
            ("IPv4" | "Date32", None) => ChType::Opaque(name.to_string(), 4),
            ("Decimal256", Some(_)) => ChType::Opaque(text.to_string(), 32),
            _ => return None,
        })
    }

    /// The type without `Nullable` and `LowCardinality`, and whether it was nullable.
    pub fn base(&self) -> (&ChType, bool) {
        match self {
            ChType::Nullable(inner) => (inner.base().0, true),
            ChType::LowCardinality(inner) => inner.base(),
            other => (other, false),
        }
    }

    /// How ferry carries the values (nullability aside).
    pub fn column_type(&self) -> ColumnType {
        match self.base().0 {
            ChType::UInt8 => ColumnType::UInt8,
            ChType::UInt16 => ColumnType::UInt16,
            ChType::UInt32 => ColumnType::UInt32,
            ChType::UInt64 => ColumnType::UInt64,
            ChType::Int8 => ColumnType::Int8,
            ChType::Int16 => ColumnType::Int16,
            ChType::Int32 => ColumnType::Int32,
            ChType::Int64 => ColumnType::Int64,
            ChType::Float32 => ColumnType::Float32,
            ChType::Float64 => ColumnType::Float64,
            ChType::Bool => ColumnType::Bool,
            ChType::String => ColumnType::Text,
            ChType::FixedString(_) => ColumnType::Blob,
            ChType::Date => ColumnType::Date,
            ChType::DateTime | ChType::DateTime64(_) => ColumnType::TimestampTz,
            ChType::Decimal(precision, scale) => ColumnType::Decimal {
                precision: Some(*precision),
                scale: Some(*scale as i32),
            },
            ChType::Uuid => ColumnType::Uuid,
            ChType::Enum(labels, _) => ColumnType::Enum {
                labels: labels.iter().map(|(label, _)| label.clone()).collect(),
            },
            ChType::Array(element) => ColumnType::Array {
                element: Box::new(element.column_type()),
            },
            // Carried to no other engine (check_readable refuses them): a placeholder.
            ChType::Tuple(_) | ChType::Map(..) | ChType::Opaque(..) => ColumnType::Blob,
            ChType::Nullable(_) | ChType::LowCardinality(_) => ColumnType::Text,
        }
    }
}

/// What the server can do, by its version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerFeatures {
    /// `major.minor`.
    pub version: (u32, u32),
}

impl ServerFeatures {
    /// From `SELECT version()`, e.g. `18.16.1` or `24.3.2.23`.
    pub fn from_version(text: &str) -> Self {
        let mut parts = text
            .trim()
            .split('.')
            .map(|part| part.parse::<u32>().unwrap_or(0));
        let major = parts.next().unwrap_or(0);
        let minor = parts.next().unwrap_or(0);
        Self {
            version: (major, minor),
        }
    }

    /// `DateTime64` exists (20.1).
    pub fn has_datetime64(&self) -> bool {
        self.version >= (20, 1)
    }

    /// `Bool` exists (21.12).
    pub fn has_bool(&self) -> bool {
        self.version >= (21, 12)
    }
}

/// The ClickHouse type a column of another engine is created with, or why none holds it
/// losslessly.
pub fn target_type(
    column_type: &ColumnType,
    nullable: bool,
    features: ServerFeatures,
) -> Result<String, String> {
    let base = match column_type {
        ColumnType::Bool if features.has_bool() => "Bool".to_string(),
        ColumnType::Bool => "UInt8".to_string(),
        ColumnType::Int8 => "Int8".into(),
        ColumnType::Int16 | ColumnType::Year => "Int16".into(),
        ColumnType::Int32 => "Int32".into(),
        ColumnType::Int64 => "Int64".into(),
        ColumnType::UInt8 => "UInt8".into(),
        ColumnType::UInt16 => "UInt16".into(),
        ColumnType::UInt32 => "UInt32".into(),
        ColumnType::UInt64 | ColumnType::Bit { .. } => "UInt64".into(),
        ColumnType::Float32 => "Float32".into(),
        ColumnType::Float64 => "Float64".into(),
        ColumnType::Decimal {
            precision: Some(precision),
            scale,
        } if *precision <= 38 => {
            let scale = scale.unwrap_or(0);
            if scale < 0 {
                return Err("a negative scale has no ClickHouse Decimal".into());
            }
            format!("Decimal({precision}, {scale})")
        }
        ColumnType::Decimal { .. } => {
            return Err(
                "an unconstrained or wider than 38 digits decimal has no ClickHouse Decimal".into(),
            );
        }
        ColumnType::Text | ColumnType::Json | ColumnType::Interval | ColumnType::TimeTz => {
            "String".into()
        }
        ColumnType::Set { .. } => "String".into(),
        ColumnType::Enum { labels } => {
            let items: Vec<String> = labels
                .iter()
                .enumerate()
                .map(|(index, label)| {
                    format!(
                        "'{}' = {}",
                        label.replace('\\', "\\\\").replace('\'', "\\'"),
                        index + 1
                    )
                })
                .collect();
            if labels.len() > 127 {
                format!("Enum16({})", items.join(", "))
            } else {
                format!("Enum8({})", items.join(", "))
            }
        }
        ColumnType::Blob => "String".into(),
        ColumnType::Uuid => "UUID".into(),
        ColumnType::Date => "Date".into(),
        ColumnType::Timestamp | ColumnType::TimestampTz if features.has_datetime64() => {
            "DateTime64(6, 'UTC')".into()
        }
        ColumnType::Timestamp | ColumnType::TimestampTz => {
            return Err(format!(
                "ClickHouse {}.{} has no DateTime64 (20.1 and later) and its DateTime holds \
                 whole seconds only; choose DateTime to keep whole seconds (verification \
                 reports any fraction), or upgrade the target",
                features.version.0, features.version.1
            ));
        }
        ColumnType::Time => "Int64".into(),
        ColumnType::Array { .. } | ColumnType::Variant => {
            return Err("ferry does not create ClickHouse columns for it yet".into());
        }
    };
    Ok(if nullable {
        format!("Nullable({base})")
    } else {
        base
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_system_columns_prints() {
        assert_eq!(
            ChType::parse("Nullable(Decimal(18, 4))"),
            Some(ChType::Nullable(Box::new(ChType::Decimal(18, 4))))
        );
        assert_eq!(
            ChType::parse("DateTime('Europe/Berlin')"),
            Some(ChType::DateTime)
        );
        assert_eq!(
            ChType::parse("Enum8('a' = 1, 'b,\\'c' = -2)"),
            Some(ChType::Enum(
                vec![("a".into(), 1), ("b,'c".into(), -2)],
                false
            ))
        );
        assert_eq!(
            ChType::parse("LowCardinality(Nullable(String))").map(|t| t.column_type()),
            Some(ColumnType::Text)
        );
        assert_eq!(
            ChType::parse("Map(String, UInt8)"),
            Some(ChType::Map(
                Box::new(ChType::String),
                Box::new(ChType::UInt8)
            ))
        );
        assert_eq!(
            ChType::parse("Tuple(a UInt8, b Nullable(String))"),
            Some(ChType::Tuple(vec![
                ChType::UInt8,
                ChType::Nullable(Box::new(ChType::String))
            ]))
        );
        assert_eq!(
            ChType::parse("Decimal(76, 2)"),
            Some(ChType::Opaque("Decimal(76, 2)".into(), 32))
        );
        assert_eq!(ChType::parse("AggregateFunction(sum, UInt64)"), None);
        assert_eq!(
            ChType::parse("Array(Array(UInt8))").map(|t| t.base().1),
            Some(false)
        );
    }

    #[test]
    fn target_types_follow_the_server_version() {
        let old = ServerFeatures::from_version("18.16.1");
        let new = ServerFeatures::from_version("24.3.1.2");
        assert!(target_type(&ColumnType::TimestampTz, false, old).is_err());
        assert_eq!(
            target_type(&ColumnType::TimestampTz, true, new).as_deref(),
            Ok("Nullable(DateTime64(6, 'UTC'))")
        );
        assert_eq!(
            target_type(&ColumnType::Bool, false, old).as_deref(),
            Ok("UInt8")
        );
    }
}
