//! Tests of the canonical checksum.
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, StringBuilder};
use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Date64Array, Decimal128Array,
    Decimal256Array, FixedSizeBinaryArray, Float16Array, Float32Array, Float64Array, Int8Array,
    Int16Array, Int32Array, Int64Array, LargeStringArray, NullArray, RecordBatch, StringArray,
    StringViewArray, Time32MillisecondArray, Time32SecondArray, Time64MicrosecondArray,
    Time64NanosecondArray, TimestampMicrosecondArray, TimestampMillisecondArray,
    TimestampNanosecondArray, TimestampSecondArray, UInt8Array, UInt16Array, UInt32Array,
    UInt64Array,
};
use arrow_schema::{DataType, Field, Schema};
use proptest::prelude::*;

use super::*;
use crate::schema::{LOGICAL_METADATA_KEY, VARIANT_METADATA_KEY};

fn batch_of(columns: Vec<ArrayRef>) -> RecordBatch {
    let fields: Vec<Field> = columns
        .iter()
        .enumerate()
        .map(|(index, column)| Field::new(format!("c{index}"), column.data_type().clone(), true))
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

fn variant_batch(column: ArrayRef) -> RecordBatch {
    let field = Field::new("v", column.data_type().clone(), true).with_metadata(HashMap::from([(
        VARIANT_METADATA_KEY.to_string(),
        "1".to_string(),
    )]));
    RecordBatch::try_new(Arc::new(Schema::new(vec![field])), vec![column]).unwrap()
}

fn checksum_of(batches: &[RecordBatch]) -> RangeChecksum {
    let mut checksum = RangeChecksum::default();
    for batch in batches {
        checksum.add_batch(batch).unwrap();
    }
    checksum
}

/// Returns the hash of the only row of a one-row batch (the sum of a single row hash).
fn row_hash(columns: Vec<ArrayRef>) -> u128 {
    let batch = batch_of(columns);
    assert_eq!(batch.num_rows(), 1);
    checksum_of(&[batch]).sum
}

fn variant_row_hash(column: ArrayRef) -> u128 {
    let batch = variant_batch(column);
    assert_eq!(batch.num_rows(), 1);
    checksum_of(&[batch]).sum
}

fn text(value: &str) -> ArrayRef {
    Arc::new(StringArray::from(vec![value]))
}

fn int64(value: i64) -> ArrayRef {
    Arc::new(Int64Array::from(vec![value]))
}

fn float64(value: f64) -> ArrayRef {
    Arc::new(Float64Array::from(vec![value]))
}

fn decimal128(coefficient: i128, precision: u8, scale: i8) -> ArrayRef {
    Arc::new(
        Decimal128Array::from(vec![coefficient])
            .with_precision_and_scale(precision, scale)
            .unwrap(),
    )
}

fn encoded_variant(value: VariantValue<'_>) -> Vec<u8> {
    let mut encoded = Vec::new();
    encode_variant(&value, &mut encoded);
    encoded
}

fn rows_batch(rows: &[(i64, Option<String>)]) -> RecordBatch {
    let ids: Int64Array = rows.iter().map(|(id, _)| Some(*id)).collect();
    let names: StringArray = rows.iter().map(|(_, name)| name.as_deref()).collect();
    batch_of(vec![Arc::new(ids), Arc::new(names)])
}

#[test]
fn xxh3_128_matches_the_reference_test_vector() {
    // XXH3_128bits("") from the reference implementation: high64, low64.
    assert_eq!(xxh3_128(b""), 0x99aa06d3014798d8_6001c324468d497f);
}

#[test]
fn row_encoding_matches_the_documented_bytes() {
    let batch = batch_of(vec![
        Arc::new(BooleanArray::from(vec![true])),
        Arc::new(Int32Array::from(vec![-2])),
        Arc::new(StringArray::from(vec!["ab"])),
        Arc::new(Int64Array::from(vec![None::<i64>])),
        decimal128(1500, 10, 3),
        Arc::new(Date32Array::from(vec![3])),
        Arc::new(Time32SecondArray::from(vec![1])),
    ]);
    let encoders: Vec<ColumnEncoder<'_>> = batch
        .schema_ref()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| ColumnEncoder::new(field, column.as_ref()).unwrap())
        .collect();
    let mut encoding = Vec::new();
    for encoder in &encoders {
        encoder.encode(0, &mut encoding).unwrap();
    }

    let mut expected = vec![tag::BOOL, 1, tag::INT];
    expected.extend_from_slice(&(-2i128).to_le_bytes());
    expected.extend_from_slice(&[tag::TEXT, 2, 0, 0, 0, 0, 0, 0, 0, b'a', b'b']);
    expected.push(tag::NULL);
    expected.push(tag::DECIMAL);
    expected.extend_from_slice(&15i128.to_le_bytes());
    expected.extend_from_slice(&1i32.to_le_bytes());
    expected.extend_from_slice(&[tag::DATE, 3, 0, 0, 0, 0, 0, 0, 0]);
    expected.push(tag::TIME);
    expected.extend_from_slice(&1_000_000_000i64.to_le_bytes());
    assert_eq!(encoding, expected);
    assert_eq!(checksum_of(&[batch]).sum, xxh3_128(&expected));
}

#[test]
fn length_prefixes_separate_adjacent_text_columns() {
    assert_ne!(
        row_hash(vec![text("x0"), text("y")]),
        row_hash(vec![text("x"), text("0y")])
    );
}

#[test]
fn null_empty_text_zero_false_and_empty_blob_hash_differently() {
    let null_hash = row_hash(vec![Arc::new(NullArray::new(1))]);
    let empty_text_hash = row_hash(vec![text("")]);
    let zero_hash = row_hash(vec![int64(0)]);
    let false_hash = row_hash(vec![Arc::new(BooleanArray::from(vec![false]))]);
    let empty_blob_hash = row_hash(vec![Arc::new(BinaryArray::from(vec![&b""[..]]))]);
    let float_zero_hash = row_hash(vec![float64(0.0)]);
    let hashes = [
        null_hash,
        empty_text_hash,
        zero_hash,
        false_hash,
        empty_blob_hash,
        float_zero_hash,
    ];
    for (left_index, left) in hashes.iter().enumerate() {
        for right in &hashes[left_index + 1..] {
            assert_ne!(left, right);
        }
    }
}

#[test]
fn null_is_typeless() {
    let null_int = row_hash(vec![Arc::new(Int64Array::from(vec![None::<i64>]))]);
    let null_text = row_hash(vec![Arc::new(StringArray::from(vec![None::<&str>]))]);
    let null_column = row_hash(vec![Arc::new(NullArray::new(1))]);
    assert_eq!(null_int, null_text);
    assert_eq!(null_int, null_column);
}

#[test]
fn column_order_changes_the_row_hash() {
    assert_ne!(
        row_hash(vec![int64(1), int64(2)]),
        row_hash(vec![int64(2), int64(1)])
    );
}

#[test]
fn checksum_is_independent_of_row_order_and_batch_split() {
    let rows: Vec<(i64, Option<String>)> = (0..10)
        .map(|id| (id, (id % 3 != 0).then(|| format!("name {id}"))))
        .collect();
    let mut shuffled = rows.clone();
    shuffled.reverse();
    shuffled.swap(2, 7);

    let whole = checksum_of(&[rows_batch(&rows)]);
    let shuffled_batch = rows_batch(&shuffled);
    let split_by_slicing = checksum_of(&[
        shuffled_batch.slice(0, 3),
        shuffled_batch.slice(3, 0),
        shuffled_batch.slice(3, 7),
    ]);
    let split_by_building = checksum_of(&[rows_batch(&shuffled[..6]), rows_batch(&shuffled[6..])]);
    assert_eq!(whole.rows, 10);
    assert_eq!(whole, split_by_slicing);
    assert_eq!(whole, split_by_building);
}

#[test]
fn duplicate_rows_do_not_cancel() {
    let single = checksum_of(&[rows_batch(&[(7, Some("same".to_string()))])]);
    let twice = checksum_of(&[rows_batch(&[
        (7, Some("same".to_string())),
        (7, Some("same".to_string())),
    ])]);
    assert_eq!(twice.rows, 2);
    assert_ne!(twice.sum, 0);
    assert_ne!(twice.sum, single.sum);
    assert_eq!(twice.sum, single.sum.wrapping_mul(2));
}

#[test]
fn nan_payloads_hash_equal() {
    let quiet_nan = float64(f64::NAN);
    let negative_nan = float64(-f64::NAN);
    let payload_nan = float64(f64::from_bits(0x7ff0_0000_0000_0001));
    let float32_nan: ArrayRef = Arc::new(Float32Array::from(vec![f32::from_bits(0xffc0_1234)]));
    let expected = row_hash(vec![quiet_nan]);
    assert_eq!(row_hash(vec![negative_nan]), expected);
    assert_eq!(row_hash(vec![payload_nan]), expected);
    assert_eq!(row_hash(vec![float32_nan]), expected);
}

#[test]
fn negative_zero_differs_from_positive_zero() {
    assert_ne!(row_hash(vec![float64(-0.0)]), row_hash(vec![float64(0.0)]));
    let negative_zero_f32: ArrayRef = Arc::new(Float32Array::from(vec![-0.0f32]));
    assert_eq!(
        row_hash(vec![negative_zero_f32]),
        row_hash(vec![float64(-0.0)])
    );
}

#[test]
fn integers_of_every_width_hash_equal() {
    let expected = row_hash(vec![int64(5)]);
    let widths: Vec<ArrayRef> = vec![
        Arc::new(Int8Array::from(vec![5])),
        Arc::new(Int16Array::from(vec![5])),
        Arc::new(Int32Array::from(vec![5])),
        Arc::new(UInt8Array::from(vec![5])),
        Arc::new(UInt16Array::from(vec![5])),
        Arc::new(UInt32Array::from(vec![5])),
        Arc::new(UInt64Array::from(vec![5])),
    ];
    for column in widths {
        assert_eq!(row_hash(vec![column]), expected);
    }
    let max_unsigned: ArrayRef = Arc::new(UInt64Array::from(vec![u64::MAX]));
    let minus_one: ArrayRef = Arc::new(Int64Array::from(vec![-1]));
    assert_ne!(row_hash(vec![max_unsigned]), row_hash(vec![minus_one]));
}

#[test]
fn float32_widens_exactly_to_float64() {
    let float32_one_and_a_half: ArrayRef = Arc::new(Float32Array::from(vec![1.5f32]));
    assert_eq!(
        row_hash(vec![float32_one_and_a_half]),
        row_hash(vec![float64(1.5)])
    );
    let float32_tenth: ArrayRef = Arc::new(Float32Array::from(vec![0.1f32]));
    let float32_tenth_hash = row_hash(vec![float32_tenth]);
    assert_eq!(
        float32_tenth_hash,
        row_hash(vec![float64(f64::from(0.1f32))])
    );
    assert_ne!(float32_tenth_hash, row_hash(vec![float64(0.1)]));
}

#[test]
fn decimals_normalize_trailing_zeros() {
    assert_eq!(
        row_hash(vec![decimal128(150, 10, 2)]),
        row_hash(vec![decimal128(15, 10, 1)])
    );
    assert_eq!(
        row_hash(vec![decimal128(0, 10, 2)]),
        row_hash(vec![decimal128(0, 10, 0)])
    );
    assert_eq!(
        row_hash(vec![decimal128(1200, 10, 0)]),
        row_hash(vec![decimal128(12, 10, -2)])
    );
    assert_ne!(
        row_hash(vec![decimal128(15, 10, 1)]),
        row_hash(vec![decimal128(15, 10, 2)])
    );
    assert_ne!(
        row_hash(vec![decimal128(15, 10, 1)]),
        row_hash(vec![float64(1.5)])
    );
    assert_eq!(normalize_decimal(-1500, 3), (-15, 1));
    assert_eq!(normalize_decimal(i128::MIN, 0), (i128::MIN, 0));
}

#[test]
fn decimal256_is_accepted_when_its_normalized_coefficient_fits_i128() {
    let small = Decimal256Array::from(vec![i256::from_i128(150)])
        .with_precision_and_scale(40, 2)
        .unwrap();
    assert_eq!(
        row_hash(vec![Arc::new(small)]),
        row_hash(vec![decimal128(15, 10, 1)])
    );

    // i128::MAX × 10^2 at scale 2 is i128::MAX at scale 0.
    let hundred = i256::from_i128(100);
    let large = i256::from_i128(i128::MAX).wrapping_mul(hundred);
    let large_array = Decimal256Array::from(vec![large])
        .with_precision_and_scale(76, 2)
        .unwrap();
    assert_eq!(
        row_hash(vec![Arc::new(large_array)]),
        row_hash(vec![decimal128(i128::MAX, 38, 0)])
    );

    let too_large = large.wrapping_add(i256::ONE);
    let too_large_batch = batch_of(vec![Arc::new(
        Decimal256Array::from(vec![too_large])
            .with_precision_and_scale(76, 2)
            .unwrap(),
    )]);
    let error = RangeChecksum::default()
        .add_batch(&too_large_batch)
        .unwrap_err();
    assert!(
        matches!(error, ChecksumError::UnrepresentableValue { row: 0, .. }),
        "{error}"
    );
}

#[test]
fn timestamps_of_every_unit_and_zone_hash_equal() {
    let seconds = 1_700_000_000i64;
    let expected = row_hash(vec![Arc::new(TimestampSecondArray::from(vec![seconds]))]);
    let same_instants: Vec<ArrayRef> = vec![
        Arc::new(TimestampMillisecondArray::from(vec![seconds * 1_000])),
        Arc::new(TimestampMicrosecondArray::from(vec![seconds * 1_000_000])),
        Arc::new(TimestampNanosecondArray::from(vec![
            seconds * 1_000_000_000,
        ])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![seconds * 1_000_000])
                .with_timezone("Europe/Paris"),
        ),
    ];
    for column in same_instants {
        assert_eq!(row_hash(vec![column]), expected);
    }
    let one_microsecond_later: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![
        seconds * 1_000_000 + 1,
    ]));
    assert_ne!(row_hash(vec![one_microsecond_later]), expected);
}

#[test]
fn times_of_every_unit_hash_equal() {
    let seconds = 3_723;
    let expected = row_hash(vec![Arc::new(Time32SecondArray::from(vec![seconds]))]);
    let same_times: Vec<ArrayRef> = vec![
        Arc::new(Time32MillisecondArray::from(vec![seconds * 1_000])),
        Arc::new(Time64MicrosecondArray::from(vec![
            i64::from(seconds) * 1_000_000,
        ])),
        Arc::new(Time64NanosecondArray::from(vec![
            i64::from(seconds) * 1_000_000_000,
        ])),
    ];
    for column in same_times {
        assert_eq!(row_hash(vec![column]), expected);
    }
}

#[test]
fn date64_whole_days_match_date32_and_partial_days_are_rejected() {
    let date32: ArrayRef = Arc::new(Date32Array::from(vec![19_000]));
    let date64: ArrayRef = Arc::new(Date64Array::from(vec![19_000 * MILLISECONDS_PER_DAY]));
    assert_eq!(row_hash(vec![date32]), row_hash(vec![date64]));
    let negative_date32: ArrayRef = Arc::new(Date32Array::from(vec![-3]));
    let negative_date64: ArrayRef = Arc::new(Date64Array::from(vec![-3 * MILLISECONDS_PER_DAY]));
    assert_eq!(
        row_hash(vec![negative_date32]),
        row_hash(vec![negative_date64])
    );

    let partial_day = batch_of(vec![Arc::new(Date64Array::from(vec![
        0,
        MILLISECONDS_PER_DAY + 1,
    ]))]);
    let mut checksum = RangeChecksum::default();
    let error = checksum.add_batch(&partial_day).unwrap_err();
    assert!(
        matches!(error, ChecksumError::UnrepresentableValue { row: 1, .. }),
        "{error}"
    );
    assert_eq!(
        checksum,
        RangeChecksum::default(),
        "a failed batch leaves the checksum"
    );
}

#[test]
fn text_and_binary_layouts_hash_equal() {
    let expected = row_hash(vec![text("hello")]);
    let large: ArrayRef = Arc::new(LargeStringArray::from(vec!["hello"]));
    let view: ArrayRef = Arc::new(StringViewArray::from(vec!["hello"]));
    assert_eq!(row_hash(vec![large]), expected);
    assert_eq!(row_hash(vec![view]), expected);

    let blob_hash = row_hash(vec![Arc::new(BinaryArray::from(vec![&b"hello"[..]]))]);
    assert_ne!(blob_hash, expected);
    let fixed: ArrayRef =
        Arc::new(FixedSizeBinaryArray::try_from_iter(vec![b"hello"].into_iter()).unwrap());
    assert_eq!(row_hash(vec![fixed]), blob_hash);
}

#[test]
fn variant_values_hash_like_typed_values() {
    let variant_column = |value: VariantValue<'_>| -> ArrayRef {
        Arc::new(BinaryArray::from(vec![encoded_variant(value).as_slice()]))
    };
    assert_eq!(
        variant_row_hash(variant_column(VariantValue::Int(5))),
        row_hash(vec![int64(5)])
    );
    assert_eq!(
        variant_row_hash(variant_column(VariantValue::Real(-0.0))),
        row_hash(vec![float64(-0.0)])
    );
    assert_eq!(
        variant_row_hash(variant_column(VariantValue::Text("héllo"))),
        row_hash(vec![text("héllo")])
    );
    let null_hash = row_hash(vec![Arc::new(NullArray::new(1))]);
    assert_eq!(
        variant_row_hash(variant_column(VariantValue::Null)),
        null_hash
    );
    let arrow_null: ArrayRef = Arc::new(BinaryArray::from(vec![None::<&[u8]>]));
    assert_eq!(variant_row_hash(arrow_null), null_hash);
}

#[test]
fn invalid_variant_slot_is_reported_with_its_row() {
    let mut builder = BinaryBuilder::new();
    builder.append_value(encoded_variant(VariantValue::Int(1)));
    builder.append_value([tag::INT, 1, 2]);
    let batch = variant_batch(Arc::new(builder.finish()));
    let error = RangeChecksum::default().add_batch(&batch).unwrap_err();
    assert!(
        matches!(
            &error,
            ChecksumError::InvalidVariantValue { column, row: 1, reason: "payload too short" }
                if column == "v"
        ),
        "{error}"
    );
}

#[test]
fn variant_metadata_on_a_non_binary_column_is_rejected() {
    let error = RangeChecksum::default()
        .add_batch(&variant_batch(text("x")))
        .unwrap_err();
    assert!(
        matches!(error, ChecksumError::VariantColumnNotBinary { .. }),
        "{error}"
    );
}

#[test]
fn variant_encoding_round_trips() {
    let values = [
        VariantValue::Null,
        VariantValue::Int(0),
        VariantValue::Int(i64::MIN),
        VariantValue::Int(i64::MAX),
        VariantValue::Real(1.25),
        VariantValue::Real(-0.0),
        VariantValue::Real(f64::INFINITY),
        VariantValue::Text(""),
        VariantValue::Text("ünïcode"),
        VariantValue::Blob(b""),
        VariantValue::Blob(&[0, 255, 7]),
    ];
    for value in values {
        let encoded = encoded_variant(value);
        assert_eq!(decode_variant(&encoded).unwrap(), value);
    }
    let nan = encoded_variant(VariantValue::Real(-f64::NAN));
    let VariantValue::Real(decoded_nan) = decode_variant(&nan).unwrap() else {
        panic!("expected a real");
    };
    assert_eq!(decoded_nan.to_bits(), CANONICAL_NAN_BITS);
    assert_eq!(encoded_variant(VariantValue::Int(5))[..2], [tag::INT, 5]);
}

#[test]
fn decode_variant_rejects_malformed_input() {
    let reason_for = |bytes: &[u8]| match decode_variant(bytes) {
        Err(ChecksumError::InvalidVariant { reason }) => reason,
        other => panic!("expected invalid variant for {bytes:?}, got {other:?}"),
    };
    assert_eq!(reason_for(&[]), "empty input");
    assert_eq!(reason_for(&[42]), "unknown tag");
    assert_eq!(reason_for(&[tag::BOOL, 1]), "tag has no variant form");
    assert_eq!(
        reason_for(&[tag::DATE, 0, 0, 0, 0, 0, 0, 0, 0]),
        "tag has no variant form"
    );
    assert_eq!(
        reason_for(&[tag::NULL, 0]),
        "trailing bytes after the value"
    );
    assert_eq!(reason_for(&[tag::INT, 5, 0, 0]), "payload too short");
    assert_eq!(reason_for(&[tag::FLOAT, 0, 0]), "payload too short");
    assert_eq!(reason_for(&[tag::TEXT, 1, 0]), "payload too short");
    assert_eq!(
        reason_for(&[tag::TEXT, 3, 0, 0, 0, 0, 0, 0, 0, b'a']),
        "payload too short"
    );
    assert_eq!(
        reason_for(&[tag::BYTES, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
        "trailing bytes after the value"
    );
    assert_eq!(
        reason_for(&[tag::BYTES, 255, 255, 255, 255, 255, 255, 255, 255]),
        "payload too short"
    );
    assert_eq!(
        reason_for(&[tag::TEXT, 1, 0, 0, 0, 0, 0, 0, 0, 0xff]),
        "text is not valid utf-8"
    );

    let mut beyond_i64 = vec![tag::INT];
    beyond_i64.extend_from_slice(&(i128::from(i64::MAX) + 1).to_le_bytes());
    assert_eq!(reason_for(&beyond_i64), "integer outside the i64 range");

    let mut payload_nan = vec![tag::FLOAT];
    payload_nan.extend_from_slice(&0x7ff8_0000_0000_0001u64.to_le_bytes());
    assert_eq!(reason_for(&payload_nan), "nan is not the canonical nan");

    let mut with_trailing = encoded_variant(VariantValue::Int(1));
    with_trailing.push(0);
    assert_eq!(reason_for(&with_trailing), "trailing bytes after the value");
}

#[test]
fn unsupported_type_is_named_in_the_error() {
    let half: ArrayRef = Arc::new(Float16Array::from(vec![None]));
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("h", DataType::Float16, true)])),
        vec![half],
    )
    .unwrap();
    let error = RangeChecksum::default().add_batch(&batch).unwrap_err();
    assert_eq!(
        error.to_string(),
        "column h has type Float16 that the canonical checksum does not support"
    );
}

#[test]
fn merge_equals_adding_both_batches_and_display_is_stable() {
    let first = rows_batch(&[(1, None), (2, Some("b".to_string()))]);
    let second = rows_batch(&[(3, Some(String::new()))]);
    let mut merged = checksum_of(std::slice::from_ref(&first));
    merged.merge(checksum_of(std::slice::from_ref(&second)));
    assert_eq!(merged, checksum_of(&[first, second]));

    let shown = RangeChecksum { rows: 3, sum: 0xab }.to_string();
    assert_eq!(shown, "3 rows, 000000000000000000000000000000ab");
    let wrapped = {
        let mut checksum = RangeChecksum {
            rows: 1,
            sum: u128::MAX,
        };
        checksum.merge(RangeChecksum { rows: 1, sum: 2 });
        checksum
    };
    assert_eq!(wrapped, RangeChecksum { rows: 2, sum: 1 });
}

#[test]
fn empty_batch_leaves_the_checksum_at_zero() {
    let mut builder = StringBuilder::new();
    builder.append_null();
    let batch = batch_of(vec![Arc::new(builder.finish())]).slice(0, 0);
    assert_eq!(checksum_of(&[batch]), RangeChecksum::default());
}

fn rows_strategy() -> impl Strategy<Value = Vec<(i64, Option<String>)>> {
    // Small value domains make duplicate rows likely, which is the case XOR gets wrong.
    prop::collection::vec((-3i64..3, prop::option::of("[a-c]{0,3}")), 0..40)
}

proptest! {
    #[test]
    fn checksum_ignores_permutation_and_batch_split(
        rows in rows_strategy(),
        permutation_seed in any::<u64>(),
        split_points in prop::collection::vec(any::<usize>(), 0..4),
    ) {
        let expected = checksum_of(&[rows_batch(&rows)]);

        // A deterministic Fisher-Yates shuffle driven by the seed.
        let mut shuffled = rows.clone();
        let mut state = permutation_seed | 1;
        for index in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let other = (state % (index as u64 + 1)) as usize;
            shuffled.swap(index, other);
        }

        let mut boundaries: Vec<usize> = split_points
            .iter()
            .map(|point| point % (shuffled.len() + 1))
            .collect();
        boundaries.push(0);
        boundaries.push(shuffled.len());
        boundaries.sort_unstable();
        let batches: Vec<RecordBatch> = boundaries
            .windows(2)
            .map(|window| rows_batch(&shuffled[window[0]..window[1]]))
            .collect();

        prop_assert_eq!(checksum_of(&batches), expected);
    }

    #[test]
    fn changing_any_single_value_changes_the_checksum(
        rows in prop::collection::vec((any::<i64>(), prop::option::of(".{0,8}")), 1..20),
        row_choice in any::<usize>(),
        change_id in any::<bool>(),
        new_id in any::<i64>(),
        new_name in prop::option::of(".{0,8}"),
    ) {
        let row_index = row_choice % rows.len();
        let mut changed = rows.clone();
        if change_id {
            prop_assume!(new_id != rows[row_index].0);
            changed[row_index].0 = new_id;
        } else {
            prop_assume!(new_name != rows[row_index].1);
            changed[row_index].1 = new_name;
        }
        prop_assert_ne!(checksum_of(&[rows_batch(&changed)]), checksum_of(&[rows_batch(&rows)]));
    }
}

fn logical_column_hash(logical: &str, value: &str) -> RangeChecksum {
    let field = Field::new("v", DataType::Utf8, true).with_metadata(HashMap::from([(
        LOGICAL_METADATA_KEY.to_string(),
        logical.to_string(),
    )]));
    let batch = RecordBatch::try_new(
        Arc::new(arrow_schema::Schema::new(vec![field])),
        vec![Arc::new(StringArray::from(vec![value])) as ArrayRef],
    )
    .unwrap();
    let mut checksum = RangeChecksum::default();
    checksum.add_batch(&batch).unwrap();
    checksum
}

#[test]
fn decimal_text_agrees_with_arrow_decimals_and_normalizes() {
    let as_arrow = {
        let array = Decimal128Array::from(vec![150i128])
            .with_precision_and_scale(10, 2)
            .unwrap();
        let batch = RecordBatch::try_from_iter(vec![("v", Arc::new(array) as ArrayRef)]).unwrap();
        let mut checksum = RangeChecksum::default();
        checksum.add_batch(&batch).unwrap();
        checksum
    };
    assert_eq!(logical_column_hash("decimal", "1.50"), as_arrow);
    assert_eq!(logical_column_hash("decimal", "001.5"), as_arrow);
    assert_ne!(logical_column_hash("decimal", "1.51"), as_arrow);
    let wide = "1".repeat(60);
    assert_eq!(
        logical_column_hash("decimal", &wide),
        logical_column_hash("decimal", &format!("{wide}.000"))
    );
    assert_ne!(
        logical_column_hash("decimal", "NaN"),
        logical_column_hash("decimal", "Infinity")
    );
    assert_ne!(
        logical_column_hash("decimal", "1.5"),
        logical_column_hash("text-not-logical", "1.5")
    );
}

#[test]
fn plain_decimal_text_hashes_as_its_canonical_form() {
    // Plain text takes a shortcut; with an exponent it goes through the canonical text.
    let max = i128::MAX.to_string();
    let min = i128::MIN.to_string();
    let beyond = format!("{max}0");
    for text in [
        "0",
        "-0",
        "-0.000",
        "+7",
        ".5",
        "5.",
        "12.50",
        "-12.50",
        "001.5",
        "1200",
        "0.000100",
        &max,
        &min,
        &beyond,
        &format!("-{beyond}"),
        &format!("{max}.10"),
    ] {
        assert_eq!(
            logical_column_hash("decimal", text),
            logical_column_hash("decimal", &format!("{text}e0")),
            "{text}"
        );
    }
}

#[test]
fn json_is_compared_canonically() {
    assert_eq!(
        logical_column_hash("json", r#"{"b": 1.0, "a": [1, "x\u00e9"]}"#),
        logical_column_hash("json", r#"{"a":[1,"xé"],"b":1}"#)
    );
    assert_ne!(
        logical_column_hash("json", r#"{"a": 1}"#),
        logical_column_hash("json", r#"{"a": 2}"#)
    );
    assert_ne!(
        logical_column_hash("json", r#""1""#),
        logical_column_hash("json", "1")
    );
}

#[test]
fn rows_added_by_range_sum_as_each_range_alone() {
    let rows: Vec<(i64, Option<String>)> = (0..10)
        .map(|i| (i, (i % 4 != 0).then(|| format!("row {i}"))))
        .collect();
    let range_of = |i: usize| match i % 3 {
        0 => Some(0),
        1 => Some(1),
        _ if i == 8 => None,
        _ => Some(7),
    };
    let ranges: Vec<Option<usize>> = (0..rows.len()).map(range_of).collect();
    let mut sums = vec![RangeChecksum::default(); 2];
    let outside =
        RangeChecksum::add_batch_by_range(&mut sums, &rows_batch(&rows), &ranges).unwrap();
    // Rows 2 and 5 name a range past the two; row 8 none.
    assert_eq!(outside, 3);
    for (range, sum) in sums.iter().enumerate() {
        let alone: Vec<(i64, Option<String>)> = rows
            .iter()
            .enumerate()
            .filter(|(i, _)| range_of(*i) == Some(range))
            .map(|(_, row)| row.clone())
            .collect();
        assert_eq!(*sum, checksum_of(&[rows_batch(&alone)]), "range {range}");
    }
}
