//! Per-frame statistics (min, max, mean, sum of the pixels): the processing step of the demo
//! workflow, and a small example of work done on frames as they stream.

use pva_codec::{PodArray, ScalarArray, Value};
use serde::Serialize;

use crate::frame::Frame;

/// The statistics of one frame's pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FrameStats {
    /// The frame number.
    pub unique_id: i64,
    /// Pixels counted.
    pub count: u64,
    /// Smallest pixel value (NaN pixels are left out of min and max).
    pub min: f64,
    /// Largest pixel value.
    pub max: f64,
    /// Mean pixel value.
    pub mean: f64,
    /// Sum of the pixel values.
    pub sum: f64,
}

impl FrameStats {
    /// The header of [`FrameStats::csv_row`] rows.
    pub const CSV_HEADER: &'static str = "uniqueId,count,min,max,mean,sum";

    /// The statistics of `frame`: of its pixel array, or of its value for a scalar frame;
    /// `None` for string data or an empty array.
    pub fn of(frame: &Frame) -> Option<FrameStats> {
        let (count, min, max, sum) = match frame.data() {
            Some(array) => fold_array(array)?,
            None => {
                let v = frame.value.get("value").and_then(Value::as_f64)?;
                (1, v, v, v)
            }
        };
        if count == 0 {
            return None;
        }
        Some(FrameStats {
            unique_id: frame.meta.unique_id,
            count,
            min,
            max,
            mean: sum / count as f64,
            sum,
        })
    }

    /// One CSV line (without the newline), in the order of [`FrameStats::CSV_HEADER`].
    pub fn csv_row(&self) -> String {
        format!(
            "{},{},{},{},{},{}",
            self.unique_id, self.count, self.min, self.max, self.mean, self.sum
        )
    }
}

/// Count, min, max and sum of the elements, as doubles.
fn fold(values: impl Iterator<Item = f64>) -> (u64, f64, f64, f64) {
    values.fold(
        (0, f64::INFINITY, f64::NEG_INFINITY, 0.0),
        |(n, lo, hi, sum), v| (n + 1, lo.min(v), hi.max(v), sum + v),
    )
}

/// Fold a typed array over a borrowed slice when its bytes allow (no copy), converting each
/// element to a double.
fn fold_pod<T: pva_codec::Element>(
    array: &PodArray<T>,
    to_f64: impl Fn(T) -> f64,
) -> (u64, f64, f64, f64) {
    fold(array.to_cow().iter().map(|&v| to_f64(v)))
}

fn fold_array(array: &ScalarArray) -> Option<(u64, f64, f64, f64)> {
    Some(match array {
        ScalarArray::Bool(b) => fold(b.iter().map(|&v| f64::from(u8::from(v)))),
        ScalarArray::I8(a) => fold_pod(a, f64::from),
        ScalarArray::I16(a) => fold_pod(a, f64::from),
        ScalarArray::I32(a) => fold_pod(a, f64::from),
        ScalarArray::I64(a) => fold_pod(a, |v| v as f64),
        ScalarArray::U8(a) => fold_pod(a, f64::from),
        ScalarArray::U16(a) => fold_pod(a, f64::from),
        ScalarArray::U32(a) => fold_pod(a, f64::from),
        ScalarArray::U64(a) => fold_pod(a, |v| v as f64),
        ScalarArray::F32(a) => fold_pod(a, f64::from),
        ScalarArray::F64(a) => fold_pod(a, |v| v),
        ScalarArray::String(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pva_codec::nt::{NdArrayFrame, NtNdArray};

    fn frame(data: ScalarArray, id: i32) -> Frame {
        let n = data.len() as i32;
        let value = NtNdArray::new()
            .build_value(NdArrayFrame::new(data, &[n], id))
            .unwrap();
        Frame::from_value(value).unwrap()
    }

    #[test]
    fn statistics_of_an_integer_frame() {
        let f = frame(ScalarArray::U16(PodArray::from_vec(vec![1, 5, 3, 7])), 9);
        let s = FrameStats::of(&f).unwrap();
        assert_eq!(
            s,
            FrameStats {
                unique_id: 9,
                count: 4,
                min: 1.0,
                max: 7.0,
                mean: 4.0,
                sum: 16.0
            }
        );
        assert_eq!(s.csv_row(), "9,4,1,7,4,16");
        assert_eq!(
            FrameStats::CSV_HEADER.split(',').count(),
            s.csv_row().split(',').count()
        );
    }

    #[test]
    fn statistics_of_float_and_bool_frames_and_none_for_empty_ones() {
        let f = frame(
            ScalarArray::F64(PodArray::from_vec(vec![-1.5, 2.5, f64::NAN])),
            1,
        );
        let s = FrameStats::of(&f).unwrap();
        assert_eq!((s.min, s.max, s.count), (-1.5, 2.5, 3));
        assert!(s.sum.is_nan(), "a NaN pixel makes the sum NaN");
        let b = frame(ScalarArray::Bool(vec![true, false, true]), 2);
        assert_eq!(FrameStats::of(&b).unwrap().sum, 2.0);
        let empty = frame(ScalarArray::I32(PodArray::from_vec(Vec::new())), 3);
        assert_eq!(FrameStats::of(&empty), None);
    }
}
